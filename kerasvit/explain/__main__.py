from kerasvit.cli.explain import main

main()
