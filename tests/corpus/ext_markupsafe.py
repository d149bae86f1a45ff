"""markupsafe: escape and Markup formatting, 2,000 rounds."""
from markupsafe import Markup, escape

total = 0
for i in range(2000):
    user = '<script>alert("%d")</script> & co' % i
    safe = escape(user)
    html = Markup("<p title='{0}'>{1}</p>").format(user, safe)
    assert "&lt;script&gt;" in html
    plain = html.striptags()
    total += len(html) + len(plain)
print("markupsafe", total)
