from medtransfer.cli import main

main()
