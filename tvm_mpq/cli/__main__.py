import sys

from tvm_mpq.cli import main

sys.exit(main())
