"""The encryption inventory: how every stored object is encrypted (`scan`)."""
