from relay_server.dashboard.app import main

main()
