"""Stage entry points (one module per ``lengthgen`` subcommand); see ``lengthgen.cli``."""
