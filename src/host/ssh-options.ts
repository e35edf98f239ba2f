/**
 * Options on every banger ssh and in the `Host *.vm` block: nothing of the user's (agent, X11
 * display, port forwards, local commands) reaches the guest. ssh keeps the first value it
 * obtains, so these given with -o (or in a block read first) win over ~/.ssh/config.
 */
export const SSH_NO_LEAK_OPTIONS = ["ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes", "PermitLocalCommand=no"] as const;
