from labelwise.cli.main import run

run()
