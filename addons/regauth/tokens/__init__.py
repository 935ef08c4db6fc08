"""Registry tokens: the signing keys and their lifecycle (`keyring`, `keyids`, `keystate`),
issuing (`issue`), verifying (`verify`, with the claims it reads in `claims`), and the keys a
registry was seen to refuse (`refused_keys`)."""
