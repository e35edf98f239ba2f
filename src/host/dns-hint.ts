/** What to do when dns_listen is taken, e.g. by another user's daemon on this host. */
export const DNS_FIX =
  'Set dns_listen in config.toml to a free address of your own (e.g. dns_listen = "127.0.0.1:42070"), ' +
  "then run `banger daemon stop`; the next command starts the daemon on it";
