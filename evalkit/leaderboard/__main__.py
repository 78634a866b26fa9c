from evalkit.leaderboard.build import main

main()
