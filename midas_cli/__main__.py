from midas_cli.cli.app import main

main()
