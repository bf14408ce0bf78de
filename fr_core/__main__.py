from fr_core.app.cli import main

main(prog_name="fr-edge")
