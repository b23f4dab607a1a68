from cnnclf.sweeps.runner import main

main()
