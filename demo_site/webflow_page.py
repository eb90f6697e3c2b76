"""A Paperplane landing page as a site builder such as Webflow publishes it (about 100 KB).

Class-heavy markup with ``/>`` on void elements, responsive images with long
``srcset`` lists, inline SVG icons, inline scripts (the builder's own, JSON-LD,
analytics, a chat widget), a style sheet in the head, comments left by the
builder and by pasted embeds. Two tests are written into it as server-side
variant blocks (:data:`BLOCK_TESTS`): ``landing_hero`` (variants ``control``
and ``bold``) on the hero's copy, and ``landing_pricing`` (``control``, monthly
prices, and ``annual``) on the pricing table.

The page is the same on every call: the rewrite benchmark measures on it, and
the demo can serve it.
"""

from __future__ import annotations

import functools
from typing import Final

BLOCK_TESTS: Final = {"landing_hero": ("control", "bold"), "landing_pricing": ("control", "annual")}
"""The tests whose variant blocks the page carries, and each one's variants."""
_CDN: Final = "https://cdn.prod.website-files.com/65f2a1c3e4b0d9a8c7f61e20"

_ICONS: Final = (
    "M4 12h16M12 4v16",
    "M5 13l4 4L19 7",
    "M12 8v4l3 3m6-3a9 9 0 11-18 0 9 9 0 0118 0z",
    "M3 10h18M7 15h1m4 0h1m-7 4h12a3 3 0 003-3V8a3 3 0 00-3-3H6a3 3 0 00-3 3v8a3 3 0 003 3z",
    "M17 20h5v-2a3 3 0 00-5.36-1.86M17 20H7m10 0v-2c0-.66-.13-1.28-.36-1.86M7 20H2v-2a3 3 0 0"
    "15.36-1.86M7 20v-2c0-.66.13-1.28.36-1.86m0 0a5 5 0 019.28 0M15 7a3 3 0 11-6 0 3 3 0 016 0z",
    "M9 19v-6a2 2 0 00-2-2H5a2 2 0 00-2 2v6a2 2 0 002 2h2a2 2 0 002-2zm0 0V9a2 2 0 012-2h2a2 2 0"
    " 012 2v10m-6 0a2 2 0 002 2h2a2 2 0 002-2m0 0V5a2 2 0 012-2h2a2 2 0 012 2v14a2 2 0 01-2 2h-2a2"
    " 2 0 01-2-2z",
)
_FEATURES: Final = (
    ("One-minute invoices", "Pick a client, add lines, send. Taxes and currencies are handled."),
    ("Polite reminders", "Paperplane nudges late payers so you never write that awkward email."),
    ("Card payments", "Every invoice has a pay button. Money lands in your account in two days."),
    ("Recurring billing", "Retainers go out on their own, on the day you choose, every month."),
    ("Expense capture", "Snap a receipt; it is read, filed and ready for your accountant."),
    ("Team seats", "Invite a bookkeeper or a partner with exactly the access they need."),
)
_QUOTES: Final = (
    ("Maya Lindqvist", "Brand designer", "I used to chase invoices on Fridays. Now I don't."),
    ("Tomás Herrera", "iOS developer", "Clients pay by card from the email. Cash flow, solved."),
    ("Priya Raman", "Copywriter", "Setting up took ten minutes, and it looks like my brand."),
    ("Jon Okafor", "Photographer", "Reminders go out politely, so I never have to be rude."),
)
_PLANS: Final = (("Solo", 9, 7), ("Studio", 24, 19), ("Agency", 59, 47))


def _img(name: str, alt: str, css: str, width: int) -> str:
    widths = (500, 800, 1080, 1600, 2000, 2600)
    srcset = ", ".join(
        f"{_CDN}/65f2a1c3e4b0d9a8c7f61e9{w % 7}_{name}-p-{w}.webp {w}w" for w in widths
    )
    return (
        f'<img src="{_CDN}/65f2a1c3e4b0d9a8c7f61e99_{name}.webp" loading="lazy" width="{width}" '
        f'sizes="(max-width: 479px) 92vw, (max-width: 767px) 95vw, {width}px" alt="{alt}" '
        f'srcset="{srcset}" class="{css}"/>'
    )


def _icon(i: int) -> str:
    return (
        '<div class="feature-icon w-embed"><svg width="24" height="24" viewBox="0 0 24 24" '
        'fill="none" xmlns="http://www.w3.org/2000/svg"><title>icon</title><path d="'
        f'{_ICONS[i % len(_ICONS)]}" stroke="currentColor" stroke-width="2" '
        'stroke-linecap="round" stroke-linejoin="round"/></svg></div>'
    )


def _head() -> str:
    css = "".join(
        f".section-{i}{{padding:{40 + i}px 0;background-color:#f{i % 10}f{i % 10}fb}}"
        f".section-{i} .grid-{i}{{display:grid;grid-template-columns:repeat(3,1fr);gap:{i}px}}"
        f"@media screen and (max-width:767px){{.section-{i}{{padding:24px 0}}}}"
        for i in range(40)
    )
    return (
        "<!DOCTYPE html><!-- This site was created in a site builder. -->"
        "<!-- Last Published: Mon Mar 04 2024 09:12:45 GMT+0000 (Coordinated Universal Time) -->"
        '<html data-wf-domain="www.paperplane.example" data-wf-page="65f2a1c3e4b0d9a8c7f61e31" '
        'data-wf-site="65f2a1c3e4b0d9a8c7f61e20" lang="en"><head><meta charset="utf-8"/>'
        "<title>Paperplane · Invoicing for freelancers</title>"
        '<meta content="Send polished invoices in a minute and get paid by card." '
        'name="description"/><meta content="Paperplane · Invoicing for freelancers" '
        'property="og:title"/><meta content="Send polished invoices in a minute." '
        f'property="og:description"/><meta content="{_CDN}/og-image.png" property="og:image"/>'
        '<meta property="og:type" content="website"/><meta content="summary_large_image" '
        'name="twitter:card"/><meta content="width=device-width, initial-scale=1" '
        'name="viewport"/><link href="' + _CDN + '/css/paperplane.webflow.shared.4f1b2c.min.css" '
        'rel="stylesheet" type="text/css"/><link href="https://fonts.googleapis.com" '
        'rel="preconnect"/><link href="https://fonts.gstatic.com" rel="preconnect" '
        'crossorigin="anonymous"/><script src="https://ajax.googleapis.com/ajax/libs/webfont/'
        '1.6.26/webfont.js" type="text/javascript"></script><script type="text/javascript">'
        'WebFont.load({  google: {    families: ["Inter:regular,500,600,700"]  }});</script>'
        '<script type="text/javascript">!function(o,c){var n=c.documentElement,t=" w-mod-";'
        'n.className+=t+"js",("ontouchstart"in o||o.DocumentTouch&&c instanceof DocumentTouch)'
        '&&(n.className+=t+"touch")}(window,document);</script>'
        f'<link href="{_CDN}/favicon.png" rel="shortcut icon" type="image/x-icon"/>'
        f'<link href="{_CDN}/webclip.png" rel="apple-touch-icon"/>'
        f"<style>{css}</style>"
        '<script type="application/ld+json">{"@context":"https://schema.org","@type":'
        '"SoftwareApplication","name":"Paperplane","applicationCategory":"BusinessApplication",'
        '"offers":{"@type":"Offer","price":"9.00","priceCurrency":"USD"},"aggregateRating":'
        '{"@type":"AggregateRating","ratingValue":"4.8","ratingCount":"1250"}}</script>'
        "<!-- Google tag (gtag.js) --><script async "
        'src="https://www.googletagmanager.com/gtag/js?id=G-PX8Q2D4K1M"></script><script>'
        "window.dataLayer = window.dataLayer || [];function gtag(){dataLayer.push(arguments);}"
        "gtag('js', new Date());gtag('config', 'G-PX8Q2D4K1M', {'anonymize_ip': true});"
        "</script></head>"
    )


def _nav() -> str:
    links = "".join(
        f'<a href="/{page.lower()}" class="nav-link w-nav-link">{page}</a>'
        for page in ("Features", "Pricing", "Customers", "Blog", "Help")
    )
    return (
        '<div data-collapse="medium" data-animation="default" data-duration="400" '
        'data-easing="ease" data-easing2="ease" role="banner" class="navbar w-nav">'
        '<div class="container w-container"><a href="/" aria-current="page" '
        f'class="brand w-nav-brand w--current"><img src="{_CDN}/logo.svg" loading="lazy" '
        'width="132" alt="Paperplane" class="logo"/></a><nav role="navigation" '
        f'class="nav-menu w-nav-menu">{links}<div data-hover="false" data-delay="0" '
        'class="dropdown w-dropdown"><div class="dropdown-toggle w-dropdown-toggle">'
        '<div class="w-icon-dropdown-toggle"></div><div>Resources</div></div>'
        '<nav class="dropdown-list w-dropdown-list"><a href="/guides" class="w-dropdown-link">'
        'Guides</a><a href="/templates" class="w-dropdown-link">Invoice templates</a></nav>'
        '</div><a href="/login" class="nav-link w-nav-link">Log in</a><a href="/signup" '
        'class="button nav-button w-button">Start free</a></nav><div class="menu-button '
        'w-nav-button"><div class="w-icon-nav-menu"></div></div></div></div>'
    )


def _hero() -> str:
    copy = {
        "control": (
            "Invoicing that gets out of your way",
            "Send a polished invoice in under a minute, then get back to real work.",
        ),
        "bold": (
            "Get paid twice as fast",
            "Smart reminders and one-click card payments cut the wait from weeks to days.",
        ),
    }
    blocks = "".join(
        f'<div class="hero-copy" data-optibase-test="landing_hero" '
        f'data-optibase-variant="{variant}">'
        f'<h1 class="hero-heading">{heading}</h1><p class="hero-paragraph">{text}</p>'
        '<div class="hero-buttons"><a id="signup" href="/signup" class="button w-button">'
        'Start free trial</a><a href="/pricing" class="button-ghost w-button">See pricing</a>'
        "</div></div>"
        for variant, (heading, text) in copy.items()
    )
    return (
        '<section class="hero-section"><div class="container w-container">'
        f'<div class="hero-grid">{blocks}<div class="hero-image-wrap">'
        f"{_img('dashboard', 'The Paperplane dashboard', 'hero-image', 640)}</div></div>"
        f'<div class="logo-strip">{"".join(_img(f"client-{i}", "", "logo", 120) for i in range(8))}'
        "</div></div></section>"
    )


def _features(section: int) -> str:
    cards = "".join(
        f'<div class="feature-card">{_icon(section + i)}<h3 class="feature-heading">{title}</h3>'
        f'<p class="feature-text">{text}</p><a href="/features#{i}" class="text-link">Learn more'
        " →</a></div>"
        for i, (title, text) in enumerate(_FEATURES)
    )
    return (
        f'<section class="section section-{section}"><div class="container w-container">'
        f'<div class="section-header"><div class="eyebrow">Features</div><h2>Everything '
        f'between “done” and “paid”</h2></div><div class="grid-{section} w-layout-grid">{cards}'
        f"</div>{_img(f'feature-{section}', 'Feature screenshot', 'feature-image', 960)}</div>"
        "</section>"
    )


def _testimonials() -> str:
    slides = "".join(
        f'<div class="slide w-slide"><div class="testimonial-card"><p class="quote">“{quote}”'
        f'</p><div class="author">{_img(f"avatar-{i}", name, "avatar", 48)}<div><div '
        f'class="author-name">{name}</div><div class="author-role">{role}</div></div></div>'
        "</div></div>"
        for i, (name, role, quote) in enumerate(_QUOTES * 2)
    )
    return (
        '<section class="section testimonials"><div class="container w-container">'
        "<!-- Slider: keep the mask and the nav, the builder's script looks for them -->"
        '<div data-delay="4000" data-animation="slide" class="slider w-slider" '
        'data-autoplay="false" data-easing="ease" data-hide-arrows="false" '
        'data-disable-swipe="false" data-autoplay-limit="0" data-nav-spacing="3" '
        'data-duration="500" data-infinite="true"><div class="mask w-slider-mask">'
        f'{slides}</div><div class="w-slider-arrow-left"><div class="w-icon-slider-left">'
        '</div></div><div class="w-slider-arrow-right"><div class="w-icon-slider-right">'
        '</div></div><div class="w-slider-nav w-round"></div></div></div></section>'
    )


def _pricing() -> str:
    def table(variant: str) -> str:
        annual = variant == "annual"
        rows = "".join(
            f'<div class="plan-card"><h3 class="plan-name">{name}</h3><div class="price">'
            f'<span class="amount">${yearly if annual else monthly}</span><span class="per">'
            f'/month{", billed yearly" if annual else ""}</span></div><ul role="list" '
            'class="plan-features w-list-unstyled">'
            + "".join(f'<li class="plan-feature">{t}</li>' for t, _ in _FEATURES[: 3 + i])
            + f'</ul><a href="/signup?plan={name.lower()}" class="button w-button">Choose '
            f"{name}</a></div>"
            for i, (name, monthly, yearly) in enumerate(_PLANS)
        )
        return (
            f'<div class="pricing-grid" data-optibase-test="landing_pricing" '
            f'data-optibase-variant="{variant}">{rows}</div>'
        )

    return (
        '<section id="pricing" class="section pricing"><div class="container w-container">'
        f'<h2 class="centered">Simple pricing</h2>{table("control")}{table("annual")}</div>'
        "</section>"
    )


def _faq() -> str:
    items = "".join(
        f'<div class="faq-item"><div class="faq-question">{title}?</div><div '
        f'class="faq-answer"><p>{text} Questions? Write to help@paperplane.example &amp; '
        "we answer within a day.</p></div></div>"
        for title, text in _FEATURES
    )
    return (
        '<section class="section faq"><div class="container w-container">'
        f'<h2>Questions, answered</h2><div class="faq-list">{items}</div></div></section>'
    )


def _footer() -> str:
    columns = "".join(
        f'<div class="footer-column"><div class="footer-title">{title}</div>'
        + "".join(
            f'<a href="/{title.lower()}/{link.lower().replace(" ", "-")}" '
            f'class="footer-link">{link}</a>'
            for link in links
        )
        + "</div>"
        for title, links in (
            ("Product", ("Features", "Pricing", "Integrations", "Changelog")),
            ("Company", ("About", "Careers", "Press", "Contact")),
            ("Resources", ("Blog", "Guides", "Invoice templates", "Help center")),
            ("Legal", ("Terms", "Privacy", "Cookies", "Security")),
        )
    )
    return (
        '<footer class="footer"><div class="container w-container"><div class="footer-grid">'
        f'{columns}</div><div class="footer-bottom"><div>© 2024 Paperplane Ltd.</div>'
        '<div class="social">' + "".join(_icon(i) for i in range(4)) + "</div></div></div></footer>"
    )


def _scripts() -> str:
    return (
        '<script src="https://d3e54v103j8qbb.cloudfront.net/js/jquery-3.5.1.min.dc5e7f18c8.js'
        '?site=65f2a1c3e4b0d9a8c7f61e20" type="text/javascript" integrity="sha256-9/aliU8dGd2tb6'
        'OSsuzixeV4y/faTqgFtohetphbbj0=" crossorigin="anonymous"></script>'
        f'<script src="{_CDN}/js/webflow.4a6c1b2d.js" type="text/javascript"></script>'
        "<!-- Chat widget -->"
        "<script>(function(w,d){if (w.innerWidth < 480 && !w.chatOnMobile) return;"
        "var s=d.createElement('script');s.async=true;s.src='https://chat.example/w.js';"
        "d.getElementsByTagName('head')[0].appendChild(s);w.chatSettings={position:'right',"
        "greeting:'<b>Hi!</b> Questions about invoices?'};})(window,document);</script>"
        "<script>document.querySelectorAll('.faq-question').forEach(function(q){"
        "q.addEventListener('click',function(){q.parentNode.classList.toggle('open');});});"
        "</script></body></html>"
    )


@functools.cache
def webflow_page() -> str:
    """The page: the same text on every call."""
    sections = "".join(_features(section) for section in range(1, 13))
    return (
        _head()
        + '<body class="body">'
        + _nav()
        + _hero()
        + sections
        + _testimonials()
        + _pricing()
        + _faq()
        + _footer()
        + _scripts()
    )
