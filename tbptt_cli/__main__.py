from tbptt_cli.cli import main

main()
