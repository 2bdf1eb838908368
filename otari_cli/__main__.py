"""Run the CLI as `python -m otari_cli` (how `otari start` launches the daemon)."""

from otari_cli.main import main

if __name__ == "__main__":
    main()
