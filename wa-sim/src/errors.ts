/** Bad input to the control API or the in-process API (HTTP 400). */
export class SimInputError extends Error {
  readonly status = 400;
}

/** Unknown phone, contact, device, message or fault (HTTP 404). */
export class SimNotFoundError extends Error {
  readonly status = 404;
}

/** The request is valid but the world refuses it, e.g. a fifth linked device (HTTP 409). */
export class SimConflictError extends Error {
  readonly status = 409;
}
