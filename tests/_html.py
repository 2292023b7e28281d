"""Shared by the report tests: every image of an HTML report is an embedded, valid PNG."""
import base64
import io
from html.parser import HTMLParser



class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def check_report(path, expect_images):
    from matplotlib.image import imread

    parser = Images()
    parser.feed(path.read_text(encoding="utf-8"))
    assert len(parser.sources) >= expect_images
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")  # embedded: no file, server or network
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        image = imread(io.BytesIO(png), format="png")
        assert image.ndim == 3 and min(image.shape[:2]) > 50
    return " ".join(parser.text)
