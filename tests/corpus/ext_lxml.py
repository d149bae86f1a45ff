"""lxml.etree: parse, xpath and serialize a small document, 2,000 round trips."""
from lxml import etree

XML = b"""<catalog><book id="1"><title>Alpha</title><price>10.5</price></book>
<book id="2"><title>Beta</title><price>7.25</price></book>
<book id="3"><title>Gamma</title><price>3.0</price></book></catalog>"""
total = 0
for i in range(2000):
    root = etree.fromstring(XML)
    titles = root.xpath("//book[price > 5]/title/text()")
    assert [str(t) for t in titles] == ["Alpha", "Beta"]
    root.find("book").set("seen", str(i))
    out = etree.tostring(root, encoding="utf-8")
    total += len(out)
print("lxml", total)
