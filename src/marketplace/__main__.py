"""``python -m marketplace <command>``: the ``marketplace`` console script (``marketplace.cli``)."""

from marketplace.cli import exit_process, main

if __name__ == "__main__":
    exit_process(main())
