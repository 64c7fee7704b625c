"""``python -m vqaudio`` runs the command line (also under ``torchrun -m vqaudio``)."""

import sys

from vqaudio.cli import main

sys.exit(main())
