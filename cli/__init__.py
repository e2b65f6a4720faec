"""Command-line interface: the ``spi`` command (``cli.main.spi``), one module per subcommand."""
