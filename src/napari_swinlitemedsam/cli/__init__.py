"""The ``swinlitemedsam`` command line (layer 5): the only package that uses argparse.

:mod:`.main` builds the parser and dispatches; each command that needs more lives in its own
module (:mod:`.embed`, :mod:`.train`).
"""
