"""``python -m pyro_gen`` is ``pyro-gen`` (and works under ``torchrun``)."""
import sys

from .cli import main

sys.exit(main())
