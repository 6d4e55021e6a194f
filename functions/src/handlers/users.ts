import { defineCallable } from '../callable.ts';
import { auth, db } from '../firebase.ts';
import { changeUserRole } from '../role-change.ts';

export const setUserRole = defineCallable('setUserRole', (input, caller) => changeUserRole({ auth: auth(), db: db() }, caller, input));
