"""The offline demo: the scripted model, loopback servers and the sample project."""
