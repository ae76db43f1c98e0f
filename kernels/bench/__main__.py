import sys

from simcim.kernels.bench import main

sys.exit(main())
