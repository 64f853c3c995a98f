from syncd.cli import main

main(prog_name="syncd")
