from revati.cli import main

main()
