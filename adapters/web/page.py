"""HTML of the onboarding page: server-rendered, no external assets, one small inline script.

The script polls the status endpoint and swaps in the code, progress and messages; when a code
ran out unused while the page is visible it asks for a fresh one (at most three times per load).
Every dynamic value is escaped; the script and style carry the response's CSP nonce.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:34rem;margin:2rem auto;
padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.4rem}.box{border:1px solid #ccc;border-radius:8px;padding:1rem;margin:1rem 0}
button{font-size:1rem;padding:.6rem 1.2rem;border-radius:6px;border:1px solid #0b5cad;
background:#0b5cad;color:#fff;cursor:pointer}button.secondary{background:#fff;color:#0b5cad}
input{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}
.code{font:700 2rem ui-monospace,monospace;letter-spacing:.15em}
.ok{color:#0a6b2d;font-weight:600}.err{color:#a30000}[hidden]{display:none}
"""

SCRIPT = """
(function(){
  var root=document.getElementById('app'); if(!root) return;
  var csrf=root.dataset.csrf, base=root.dataset.base, ways=root.dataset.ways||'device_code';
  var browser=ways!=='device_code', device=ways!=='browser', autos=0, autoBusy=false;
  function $(id){return document.getElementById(id);}
  function show(id,on){var e=$(id); if(e) e.hidden=!on;}
  function render(s){
    $('status').textContent=s.message;
    $('status').className=s.done?'ok':(s.error?'err':'');
    show('start-form', s.can_start && device); show('code-box', !!s.user_code);
    show('newcode-form', s.can_new_code && device);
    show('browser-form', s.can_browser && browser);
    show('other-device', s.can_browser && browser && device);
    if(s.user_code){$('user-code').textContent=s.user_code;
      $('verify-link').href=s.verification_uri; $('verify-link').textContent=s.verification_uri;}
    $('progress').textContent=s.total?(s.acquired+'/'+s.total+' tokens'):'';
    if(s.auto_new_code) auto();
    return s.done||s.final;
  }
  function auto(){
    if(autoBusy||autos>=3||document.visibilityState!=='visible') return;
    autoBusy=true; autos++;
    var body=new URLSearchParams(); body.set('csrf',csrf);
    fetch(base+'/auto-code',{method:'POST',body:body,headers:{'Accept':'application/json'}})
      .then(function(r){return r.json();})
      .then(function(s){autoBusy=false; render(s);})
      .catch(function(){autoBusy=false;});
  }
  function poll(){
    fetch(base+'/status',{headers:{'Accept':'application/json'},cache:'no-store'})
      .then(function(r){return r.json();})
      .then(function(s){ if(!render(s)) setTimeout(poll,2000); })
      .catch(function(){ setTimeout(poll,4000); });
  }
  function post(form, action){
    form.addEventListener('submit',function(ev){
      ev.preventDefault();
      var body=new URLSearchParams(new FormData(form));
      form.querySelector('button').disabled=true;
      fetch(base+action,{method:'POST',body:body,headers:{'Accept':'application/json'}})
        .then(function(r){return r.json();})
        .then(function(s){render(s); form.querySelector('button').disabled=false; poll();});
    });
  }
  post($('start-form'),'/start'); post($('newcode-form'),'/new-code');
  var bf=$('browser-form');
  if(bf) bf.addEventListener('submit',function(ev){
    ev.preventDefault();
    var upn=$('admin_upn'); if(upn) $('hint').value=upn.value;
    bf.querySelector('button').disabled=true;
    fetch(base+'/sign-in',{method:'POST',body:new URLSearchParams(new FormData(bf)),
      headers:{'Accept':'application/json'}})
      .then(function(r){return r.json();})
      .then(function(s){ if(s.authorize_url){window.location.assign(s.authorize_url);}
        else {render(s); bf.querySelector('button').disabled=false;} });
  });
  $('copy').addEventListener('click',function(){
    var t=$('user-code').textContent;
    if(navigator.clipboard){navigator.clipboard.writeText(t).then(function(){
      $('copy').textContent='Copied';});}
  });
  poll();
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def document(title: str, body: str, nonce: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style nonce='{nonce}'>{CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


@dataclass(frozen=True)
class SignInChoices:
    """Which ways the page offers, and the names that let the customer check who asks.

    ``app_name`` and ``publisher`` as Microsoft's screens show the app registration;
    ``authority`` is the host of Microsoft's sign-in page; ``msp_name`` is the MSP that asks.
    """

    browser: bool = False
    device_code: bool = True
    app_name: str = "renewbot"
    publisher: str = ""
    msp_name: str = ""
    authority: str = "login.microsoftonline.com"

    @property
    def ways(self) -> str:
        if self.browser and self.device_code:
            return "both"
        return "browser" if self.browser else "device_code"


def _browser_part(choices: SignInChoices, base: str, csrf: str, shown: bool) -> str:
    """The first choice: Sign in with Microsoft, on Microsoft's own page."""
    if not choices.browser:
        return ""
    return f"""
<form id=browser-form method=post action='{_e(base)}/sign-in' class=box{"" if shown else " hidden"}>
  <input type=hidden name=csrf value='{_e(csrf)}'><input type=hidden name=admin_upn id=hint>
  <p><button type=submit id=sign-in>Sign in with Microsoft</button></p>
  <p>You sign in on Microsoft's own page (<b>{_e(choices.authority)}</b>) and come back here
  by yourself.</p>
</form>"""


def _anti_phishing(choices: SignInChoices, tenant: str) -> str:
    """Who asks, as Microsoft will name it, and the one rule that defeats code phishing."""
    publisher = choices.publisher or "an unverified publisher"
    msp = choices.msp_name or "your IT support provider"
    return f"""
<section id=anti-phishing class=box>
  <p>Microsoft will show the app as <b>{_e(choices.app_name)}</b>, published by
  <b>{_e(publisher)}</b>. It is requested by <b>{_e(msp)}</b> for {_e(tenant)}.</p>
  <p>No one will ever ask you to type a code you got by email, chat or a phone call. Only
  type a code this page shows you, and only if you started the sign-in yourself.</p>
</section>"""


def onboarding(
    *,
    tenant_name: str,
    admin_upn: str,
    base: str,
    csrf: str,
    status: dict[str, object],
    nonce: str,
    choices: SignInChoices | None = None,
) -> str:
    """The page a customer sees at the Auth URL."""
    choices = choices or SignInChoices()

    def hidden(flag: str) -> str:
        return "" if status.get(flag) else " hidden"

    can_browser = bool(status.get("can_browser")) and choices.browser
    device_hidden = "" if choices.device_code else " hidden"
    other = "" if can_browser and choices.device_code else " hidden"

    code = _e(status.get("user_code") or "")
    uri = _e(status.get("verification_uri") or "")
    progress = f"{status['acquired']}/{status['total']} tokens" if status.get("total") else ""
    body = f"""
<main id=app data-csrf='{_e(csrf)}' data-base='{_e(base)}' data-ways='{choices.ways}'>
<h1>Renew the Microsoft 365 connection for {_e(tenant_name)}</h1>
<p>Your support team asked you to sign in once so their tools keep working. Sign in with a
<b>Global Administrator</b> account of {_e(tenant_name)}.</p>
<p id=status role=status aria-live=polite>{_e(status["message"])}</p>
<p id=progress>{_e(progress)}</p>
<p><label for=admin_upn>M365 admin username</label>
  <input id=admin_upn name=admin_upn form=start-form value='{_e(admin_upn)}' maxlength=254
  autocomplete=username></p>
{_browser_part(choices, base, csrf, can_browser)}
<h2 id=other-device{other}>Signing in on another device?</h2>
<form id=start-form method=post action='{_e(base)}/start' class=box{
        hidden("can_start") if choices.device_code else " hidden"
    }>
  <input type=hidden name=csrf value='{_e(csrf)}'>
  <p{other}>Get a code to type at Microsoft on your phone or another computer.</p>
  <p><button type=submit id=start>Start authentication</button></p>
</form>
<section id=code-box class=box{hidden("user_code")}>
  <p>1. Copy this code:</p>
  <p><span id=user-code class=code>{code}</span>
     <button type=button id=copy class=secondary>Copy code</button></p>
  <p>2. Open <a id=verify-link href='{uri}' target=_blank rel='noopener noreferrer'>{uri}</a>,
     paste the code and sign in. If you are asked, tick <i>Consent on behalf of your
     organization</i> and accept.</p>
  <p>3. Come back here: this page updates by itself.</p>
</section>{_anti_phishing(choices, tenant_name)}
<form id=newcode-form method=post action='{_e(base)}/new-code'{
        hidden("can_new_code") or device_hidden
    }>
  <input type=hidden name=csrf value='{_e(csrf)}'>
  <button type=submit id=new-code>New code</button>
</form>
</main>
<script nonce='{nonce}'>{SCRIPT}</script>"""
    return document(f"Sign in for {tenant_name}", body, nonce)


def notice(title: str, text: str, nonce: str) -> str:
    """A plain page for unknown, used or expired links and other dead ends."""
    return document(title, f"<main><h1>{_e(title)}</h1><p>{_e(text)}</p></main>", nonce)
