from fr_core.cli import main

main(prog_name="fr-edge")
