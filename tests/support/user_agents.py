"""Real browsers' User-Agents, for screening tests and the screening benchmark.

People on current desktop and mobile browsers, in WebViews and in the in-app
browsers of social apps (Facebook, Instagram, LINE, ...): every one of them is
a person and must never be screened as a bot. Kept up to date by hand; when a
browser changes its User-Agent, add the new form rather than replacing the old
(both are in the wild for months).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# What the test suite's HTTP clients and headless Chromium send: a regular desktop
# Chrome. By default, screening takes httpx2's own "python-httpx/…" and Chromium's
# "HeadlessChrome" for bots (scripts are not people), and a bot records nothing.
DESKTOP_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
# Headers for an httpx2 client that stands for a person: httpx2.Client(headers=AS_A_BROWSER).
# Read-only: Starlette's TestClient adds its own "user-agent" to the dict it is given,
# which, shared, would make every later client a "testclient" (pass dict(AS_A_BROWSER)).
AS_A_BROWSER: Mapping[str, str] = MappingProxyType({"User-Agent": DESKTOP_USER_AGENT})

_CHROME_DESKTOP = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36"
_ANDROID_K = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko)"
_IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15"

BROWSERS: dict[str, str] = {
    # Desktop
    "Chrome Windows": f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_CHROME_DESKTOP}",
    "Chrome macOS": f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_CHROME_DESKTOP}",
    "Chrome Linux": f"Mozilla/5.0 (X11; Linux x86_64) {_CHROME_DESKTOP}",
    "Chrome ChromeOS": f"Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) {_CHROME_DESKTOP}",
    "Edge Windows": f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_CHROME_DESKTOP} Edg/138.0.0.0",
    "Edge macOS": (
        f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_CHROME_DESKTOP} Edg/138.0.3351.83"
    ),
    "Firefox Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0"
    ),
    "Firefox macOS": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:140.0) Gecko/20100101 Firefox/140.0"
    ),
    "Firefox Linux": "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
    "Firefox Ubuntu": (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:139.0) Gecko/20100101 Firefox/139.0"
    ),
    "Firefox ESR Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
    ),
    "Safari macOS": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.5 Safari/605.1.15"
    ),
    "Opera Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/137.0.0.0 Safari/537.36 OPR/121.0.0.0"
    ),
    "Opera GX Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/134.0.0.0 Safari/537.36 OPR/119.0.0.0 (Edition std-2)"
    ),
    "Vivaldi Linux": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/138.0.0.0 Safari/537.36 Vivaldi/7.5.3735.54"
    ),
    "Yandex Browser Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/136.0.0.0 YaBrowser/25.6.0.0 Safari/537.36"
    ),
    "Whale Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/136.0.0.0 Whale/4.32.315.22 Safari/537.36"
    ),
    # Mobile browsers
    "Chrome Android": f"{_ANDROID_K} Chrome/138.0.0.0 Mobile Safari/537.36",
    "Chrome Android tablet": f"{_ANDROID_K} Chrome/138.0.0.0 Safari/537.36",
    "Chrome iOS": f"{_IPHONE} (KHTML, like Gecko) CriOS/138.0.7204.119 Mobile/15E148 Safari/604.1",
    "Safari iPhone": f"{_IPHONE} (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
    "Safari iPhone iOS 26": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/26.0 Mobile/15E148 Safari/604.1"
    ),
    "Safari iPad": (
        "Mozilla/5.0 (iPad; CPU OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1"
    ),
    "Firefox Android": "Mozilla/5.0 (Android 15; Mobile; rv:140.0) Gecko/140.0 Firefox/140.0",
    "Firefox iOS": (f"{_IPHONE} (KHTML, like Gecko) FxiOS/140.0 Mobile/15E148 Safari/605.1.15"),
    "Edge Android": f"{_ANDROID_K} Chrome/138.0.0.0 Mobile Safari/537.36 EdgA/138.0.0.0",
    "Edge iOS": (
        f"{_IPHONE} (KHTML, like Gecko) Version/18.0 EdgiOS/138.3351.83 Mobile/15E148 "
        "Safari/605.1.15"
    ),
    "Samsung Internet": (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 "
        "(KHTML, like Gecko) SamsungBrowser/28.0 Chrome/130.0.0.0 Mobile Safari/537.36"
    ),
    "Samsung Internet reduced": (
        f"{_ANDROID_K} SamsungBrowser/28.0 Chrome/130.0.0.0 Mobile Safari/537.36"
    ),
    "Android WebView": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/138.0.7204.63 Mobile Safari/537.36"
    ),
    "Opera Android": f"{_ANDROID_K} Chrome/137.0.0.0 Mobile Safari/537.36 OPR/90.0.0.0",
    "Opera Mini": (
        "Opera/9.80 (Android; Opera Mini/8.0.1807/191.256; U; en) Presto/2.12.423 Version/12.16"
    ),
    "UC Browser": (
        "Mozilla/5.0 (Linux; U; Android 11; en-US; RMX2185 Build/QP1A.190711.020) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.58 "
        "UCBrowser/13.4.0.1306 Mobile Safari/537.36"
    ),
    "Mi Browser": (
        "Mozilla/5.0 (Linux; U; Android 13; en-us; 2201117TY Build/TKQ1.221114.001) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/112.0.5615.136 "
        "Mobile Safari/537.36 XiaoMi/MiuiBrowser/14.4.0-g"
    ),
    "Huawei Browser": (
        "Mozilla/5.0 (Linux; Android 10; HarmonyOS; ELS-NX9; HMSCore 6.13.0.302) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.5735.196 HuaweiBrowser/15.0.4.312 "
        "Mobile Safari/537.36"
    ),
    "DuckDuckGo Android": (
        "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
        "Chrome/138.0.0.0 Mobile DuckDuckGo/5 Safari/537.36"
    ),
    "DuckDuckGo iOS": (
        f"{_IPHONE} (KHTML, like Gecko) Version/18.5 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15"
    ),
    "Silk (Kindle Fire)": (
        "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Silk/131.4.1 like Chrome/131.0.6778.260 Safari/537.36"
    ),
    "Samsung Smart TV": (
        "Mozilla/5.0 (SMART-TV; LINUX; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "94.0.4606.31/7.0 TV Safari/537.36"
    ),
    "PlayStation 5": (
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    ),
    # CUBOT is a phone maker: its model names contain "bot".
    "Chrome on a CUBOT phone": (
        "Mozilla/5.0 (Linux; Android 13; CUBOT KINGKONG 9) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/138.0.0.0 Mobile Safari/537.36"
    ),
    "WebView on a CUBOT phone": (
        "Mozilla/5.0 (Linux; Android 12; CUBOT_NOTE_30 Build/SP1A.210812.016; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/136.0.7103.125 "
        "Mobile Safari/537.36"
    ),
    # In-app browsers: a person who tapped a link inside an app.
    "Instagram iOS": (
        f"{_IPHONE} (KHTML, like Gecko) Mobile/15E148 Instagram 389.0.0.27.82 "
        "(iPhone15,3; iOS 18_5; en_US; en; scale=3.00; 1290x2796; 752823364; IABMV/1)"
    ),
    "Instagram Android": (
        "Mozilla/5.0 (Linux; Android 14; SM-A546B Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/138.0.7204.63 Mobile Safari/537.36 "
        "Instagram 389.0.0.49.87 Android (34/14; 450dpi; 1080x2340; samsung; SM-A546B; a54x; "
        "s5e8835; en_GB; 764263401)"
    ),
    "Facebook iOS": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/476.0.0.49.74;FBBV/646384398;"
        "FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.6.1;FBSS/3;FBID/phone;FBLC/en_US;"
        "FBOP/5;FBRV/649054560]"
    ),
    "Facebook Android": (
        "Mozilla/5.0 (Linux; Android 13; SM-G991B Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.134 Mobile Safari/537.36 "
        "[FB_IAB/FB4A;FBAV/473.0.0.42.81;]"
    ),
    # Facebook's in-app browser since late 2025 (crawler-user-agents lists it as a bot).
    "Facebook iOS (MetaIAB)": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6_2 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/22G100 Safari/604.1 MetaIAB Facebook"
    ),
    "Facebook Android (MetaIAB)": (
        "Mozilla/5.0 (Linux; Android 15; SM-S928B Build/AP3A.240905.015.A2; ) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/142.0.7444.74 Mobile Safari/537.36 "
        "MetaIAB Facebook"
    ),
    "Messenger Android": (
        "Mozilla/5.0 (Linux; Android 14; RMX3771 Build/UKQ1.230924.001; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/137.0.7151.115 Mobile Safari/537.36 "
        "[FB_IAB/Orca-Android;FBAV/512.0.0.53.109;]"
    ),
    "LINE iOS": f"{_IPHONE} (KHTML, like Gecko) Mobile/15E148 Safari Line/15.9.1",
    "LINE Android": (
        "Mozilla/5.0 (Linux; Android 13; SC-51C Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/138.0.7204.63 Mobile Safari/537.36 "
        "Line/15.10.1/IAB"
    ),
    "WeChat iOS": (
        f"{_IPHONE} (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.60(0x18003c2f) "
        "NetType/WIFI Language/zh_CN"
    ),
    "TikTok iOS": (
        f"{_IPHONE} (KHTML, like Gecko) Mobile/15E148 musical_ly_40.4.0 JsSdk/2.0 NetType/WIFI "
        "Channel/App Store ByteLocale/en Region/US isDarkMode/0 WKWebView/1 "
        "RevealType/Dialog BytedanceWebview/d8a21c6"
    ),
    "Snapchat iOS": (
        f"{_IPHONE} (KHTML, like Gecko) Mobile/15E148 Snapchat/13.50.0.43 "
        "(like Safari/8621.2.5.10.8, panda)"
    ),
    "Pinterest Android": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A.240805.005; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/138.0.7204.63 Mobile Safari/537.36 "
        "[Pinterest/Android]"
    ),
    "LinkedIn iOS": f"{_IPHONE} (KHTML, like Gecko) Mobile/15E148 [LinkedInApp]/9.31.1440",
    "Google app iOS": (
        f"{_IPHONE} (KHTML, like Gecko) GSA/376.0.768048312 Mobile/15E148 Safari/604.1"
    ),
    "X (Twitter) Android": (
        "Mozilla/5.0 (Linux; Android 14; SM-A155F Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/138.0.7204.63 Mobile Safari/537.36 TwitterAndroid"
    ),
    "Telegram Android": (
        "Mozilla/5.0 (Linux; Android 14; SM-A155F Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.71 Mobile Safari/537.36 "
        "Telegram-Android/11.2.3 (Samsung SM-A155F; Android 14; SDK 34; AVERAGE)"
    ),
}
