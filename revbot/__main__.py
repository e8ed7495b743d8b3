from revbot.cli import main

main()
