"""``python -m cli`` runs the ``spi`` command."""

from cli.main import spi

if __name__ == "__main__":
    spi()
