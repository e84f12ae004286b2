"""The commands, one module per family; cli imports only the module of the command called."""
