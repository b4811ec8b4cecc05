"""The `shardgen` command line, on top of everything else: `main` (the parser and each subcommand as a call to
one library function), `build` (the build's options, derived from `BuildConfig`) and `hints` (the "next:" lines,
typed the way this environment runs them). The only package that sees argparse."""
