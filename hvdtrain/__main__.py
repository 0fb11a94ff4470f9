from hvdtrain.cli.main import main

main()
