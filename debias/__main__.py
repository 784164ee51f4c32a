"""``python -m debias`` is the ``debias`` command (also what ``torchrun -m debias`` runs)."""

from debias.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
