"""`python -m robust_nic ...`: the same as the `robust-nic` command."""

from robust_nic.cli import main

if __name__ == "__main__":
    main()
