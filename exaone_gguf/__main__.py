from exaone_gguf.cli import main

main()
