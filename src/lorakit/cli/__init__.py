"""The command line: flags only, one module per stage; each command is a thin call of the stage's code.

main   the `lorakit` app: train, merge, eval, download, demo, version
data   lorakit data validate|inspect|prepare
chat   lorakit chat
serve  lorakit serve
"""
