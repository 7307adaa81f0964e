"""The pure protocol core: data in, data out, no I/O, no asyncio, no database."""
