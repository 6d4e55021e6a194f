import { z } from 'zod';

/** Custom-claim `role`, ordered by privilege: admin > operator > viewer. */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export const RoleSchema = z.enum(ROLES);
export type Role = z.infer<typeof RoleSchema>;

/** True when `have` grants at least what `need` requires. Unknown or missing roles grant nothing. */
export function roleAtLeast(have: unknown, need: Role): boolean {
  const parsed = RoleSchema.safeParse(have);
  if (!parsed.success) return false;
  return ROLES.indexOf(parsed.data) >= ROLES.indexOf(need);
}
