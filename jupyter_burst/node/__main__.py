from jupyter_burst.node.bootstrap import main

main()
