/** A command line that cannot be run as given: reported with exit code 2. */
export class UsageError extends Error {}
