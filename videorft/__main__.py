from videorft.cli import app

app()
