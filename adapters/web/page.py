"""HTML of the onboarding page: server-rendered, no external assets, one small inline script.

The script polls the status endpoint and swaps in the code, progress and messages; when a code
ran out unused while the page is visible it asks for a fresh one (at most three times per load).
Every dynamic value is escaped; the script and style carry the response's CSP nonce.
"""

from __future__ import annotations

import html

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
  var csrf=root.dataset.csrf, base=root.dataset.base, autos=0, autoBusy=false;
  function $(id){return document.getElementById(id);}
  function show(id,on){var e=$(id); if(e) e.hidden=!on;}
  function render(s){
    $('status').textContent=s.message;
    $('status').className=s.done?'ok':(s.error?'err':'');
    show('start-form', s.can_start); show('code-box', !!s.user_code);
    show('newcode-form', s.can_new_code);
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


def onboarding(
    *, tenant_name: str, admin_upn: str, base: str, csrf: str, status: dict[str, object], nonce: str
) -> str:
    """The page a customer sees at the Auth URL."""

    def hidden(flag: str) -> str:
        return "" if status.get(flag) else " hidden"

    code = _e(status.get("user_code") or "")
    uri = _e(status.get("verification_uri") or "")
    progress = f"{status['acquired']}/{status['total']} tokens" if status.get("total") else ""
    body = f"""
<main id=app data-csrf='{_e(csrf)}' data-base='{_e(base)}'>
<h1>Renew the Microsoft 365 connection for {_e(tenant_name)}</h1>
<p>Your support team asked you to sign in once so their tools keep working. Sign in with a
<b>Global Administrator</b> account of {_e(tenant_name)}.</p>
<p id=status role=status aria-live=polite>{_e(status["message"])}</p>
<p id=progress>{_e(progress)}</p>
<form id=start-form method=post action='{_e(base)}/start' class=box{hidden("can_start")}>
  <input type=hidden name=csrf value='{_e(csrf)}'>
  <label for=admin_upn>M365 admin username</label>
  <input id=admin_upn name=admin_upn value='{_e(admin_upn)}' maxlength=254 autocomplete=username>
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
</section>
<form id=newcode-form method=post action='{_e(base)}/new-code'{hidden("can_new_code")}>
  <input type=hidden name=csrf value='{_e(csrf)}'>
  <button type=submit id=new-code>New code</button>
</form>
</main>
<script nonce='{nonce}'>{SCRIPT}</script>"""
    return document(f"Sign in for {tenant_name}", body, nonce)


def notice(title: str, text: str, nonce: str) -> str:
    """A plain page for unknown, used or expired links and other dead ends."""
    return document(title, f"<main><h1>{_e(title)}</h1><p>{_e(text)}</p></main>", nonce)
