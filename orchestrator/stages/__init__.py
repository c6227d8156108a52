"""The cycle's stages and the rules each owns, over the adapters."""
