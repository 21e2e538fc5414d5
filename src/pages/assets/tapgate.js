// tapgate's only script. Every page loads this one file; <body data-page="…">
// picks the behaviour. The CSP forbids inline script and style, so nothing here
// writes style attributes or HTML strings: the DOM is built with
// createElement/textContent, and state is shown with `hidden` and classes.
//
// Flow of every ceremony: POST …/options → navigator.credentials.create/get →
// POST …/verify → follow the `redirect` the server answers with.
'use strict';

(function () {
  var API = '/.tapgate/api';
  var LOGIN_PATH = '/.tapgate/login';

  // ---------------------------------------------------------------- errors

  // An error answer from tapgate's JSON API: {"error", "message", "request_id"}.
  function ApiError(status, code, message, requestId) {
    this.name = 'ApiError';
    this.status = status;
    this.code = code || 'http-' + status;
    this.message = message;
    this.requestId = requestId || '';
  }
  ApiError.prototype = Object.create(Error.prototype);

  // The server could not be reached at all (offline, proxy down, CORS-less redirect…).
  function NetworkError() {
    this.name = 'NetworkError';
    this.message = 'Could not reach the server. Check your connection, then try again.';
  }
  NetworkError.prototype = Object.create(Error.prototype);

  // Turns anything thrown during a ceremony into {text, requestId} a person can act on.
  // `ceremony` is 'login' or 'register': the same DOMException means different
  // things in the two.
  function explain(err, ceremony) {
    if (err instanceof ApiError) {
      return { text: err.message, requestId: err.requestId };
    }
    if (err instanceof NetworkError) {
      return { text: err.message };
    }
    var name = err && err.name;
    switch (name) {
      case 'NotAllowedError':
        return {
          text: ceremony === 'register'
            ? 'The passkey was not created: the request was cancelled or timed out. Try again, and touch your key when it blinks (or use your fingerprint, face or PIN when asked).'
            : 'Sign-in did not finish: the request was cancelled, timed out, or none of your keys is registered here. Try again, and touch your key when it blinks. If it keeps failing, try your backup key.'
        };
      case 'InvalidStateError':
        return {
          text: ceremony === 'register'
            ? 'This key is already registered for your account. Use a different key, or sign in with this one.'
            : 'Your browser is still busy with another passkey request. Close any open passkey prompt, then try again.'
        };
      case 'SecurityError':
        return {
          text: 'Your browser refused to use passkeys because this page was not opened from the site\'s real address. Open the site by its usual https:// address (not an IP address or a different host name) and try again.'
        };
      case 'NotSupportedError':
        return { text: unsupportedText() };
      case 'AbortError':
        return { text: 'The request was cancelled before it finished. Try again when you are ready.' };
      case 'ConstraintError':
        return {
          text: 'This key cannot do what the site asks (for example, check a PIN or fingerprint). Set up a PIN on the key, or use another key.'
        };
      case 'TimeoutError':
        return { text: 'The request timed out. Try again, and touch your key when it blinks.' };
      case 'UnknownError':
        return { text: 'Your browser or key reported an unexpected problem. Try again, or use another key.' };
      default:
        return { text: 'Something went wrong: ' + ((err && err.message) || String(err)) + ' Try again.' };
    }
  }

  function unsupportedText() {
    return 'This browser cannot use passkeys or security keys here. Use an up-to-date Chrome, Edge, Firefox or Safari, or another device.';
  }

  // Feature check done up front, so a person sees the problem before clicking.
  function webauthnProblem() {
    if (!window.isSecureContext) {
      return 'Passkeys only work on a secure page. Open this site by its https:// address and try again.';
    }
    if (!window.PublicKeyCredential || !navigator.credentials || !navigator.credentials.create) {
      return unsupportedText();
    }
    return null;
  }

  // ---------------------------------------------------------------- HTTP

  // Same-origin JSON call. `body` undefined → GET, otherwise POST with JSON.
  // Resolves with the parsed body; rejects with ApiError or NetworkError.
  function api(path, body) {
    var init = {
      method: body === undefined ? 'GET' : 'POST',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' }
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      var isJson = (res.headers.get('Content-Type') || '').indexOf('json') !== -1;
      var parsed = isJson ? res.json().catch(function () { return null; }) : Promise.resolve(null);
      return parsed.then(function (data) {
        if (res.ok) return data || {};
        var requestId = (data && data.request_id) || res.headers.get('X-Request-Id') || '';
        var message = (data && data.message) ||
          'The server answered ' + res.status + (res.statusText ? ' ' + res.statusText : '') + '. Try again in a moment.';
        throw new ApiError(res.status, data && data.error, message, requestId);
      });
    }, function () {
      throw new NetworkError();
    });
  }

  // Follows a redirect from the server, but only within this origin: a
  // defence in depth against an open redirect if `rd` ever slips through.
  function go(target) {
    var url;
    try {
      url = new URL(target || '/', window.location.origin);
    } catch (e) {
      url = null;
    }
    if (!url || url.origin !== window.location.origin) url = new URL('/', window.location.origin);
    window.location.assign(url.pathname + url.search + url.hash);
  }

  // ---------------------------------------------------------------- base64url / JSON codecs

  function b64urlToBytes(s) {
    var b64 = String(s).replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function bytesToB64url(buf) {
    var bytes = new Uint8Array(buf);
    var bin = '';
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function copy(obj) {
    var out = {};
    for (var k in obj) if (Object.prototype.hasOwnProperty.call(obj, k)) out[k] = obj[k];
    return out;
  }

  function decodeDescriptors(list) {
    return (list || []).map(function (d) {
      var c = copy(d);
      c.id = b64urlToBytes(d.id);
      return c;
    });
  }

  function parseCreationOptions(json) {
    var PKC = window.PublicKeyCredential;
    if (typeof PKC.parseCreationOptionsFromJSON === 'function') {
      return PKC.parseCreationOptionsFromJSON(json);
    }
    var o = copy(json);
    o.challenge = b64urlToBytes(json.challenge);
    o.user = copy(json.user);
    o.user.id = b64urlToBytes(json.user.id);
    if (json.excludeCredentials) o.excludeCredentials = decodeDescriptors(json.excludeCredentials);
    return o;
  }

  function parseRequestOptions(json) {
    var PKC = window.PublicKeyCredential;
    if (typeof PKC.parseRequestOptionsFromJSON === 'function') {
      return PKC.parseRequestOptionsFromJSON(json);
    }
    var o = copy(json);
    o.challenge = b64urlToBytes(json.challenge);
    if (json.allowCredentials) o.allowCredentials = decodeDescriptors(json.allowCredentials);
    return o;
  }

  // PublicKeyCredential.toJSON(), or the same shape built by hand. Some
  // password-manager extensions replace the credential object with one whose
  // toJSON throws, so a failure falls back too.
  function credentialToJSON(cred) {
    if (typeof cred.toJSON === 'function') {
      try {
        return cred.toJSON();
      } catch (e) { /* fall through to the manual encoding */ }
    }
    var r = cred.response;
    var response = { clientDataJSON: bytesToB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = bytesToB64url(r.attestationObject);
      if (typeof r.getTransports === 'function') response.transports = r.getTransports();
      if (typeof r.getAuthenticatorData === 'function') response.authenticatorData = bytesToB64url(r.getAuthenticatorData());
      if (typeof r.getPublicKey === 'function') {
        var pk = r.getPublicKey();
        if (pk) response.publicKey = bytesToB64url(pk);
      }
      if (typeof r.getPublicKeyAlgorithm === 'function') response.publicKeyAlgorithm = r.getPublicKeyAlgorithm();
    } else {
      response.authenticatorData = bytesToB64url(r.authenticatorData);
      response.signature = bytesToB64url(r.signature);
      if (r.userHandle) response.userHandle = bytesToB64url(r.userHandle);
    }
    var out = {
      id: cred.id,
      rawId: bytesToB64url(cred.rawId),
      type: cred.type,
      response: response,
      clientExtensionResults: typeof cred.getClientExtensionResults === 'function' ? cred.getClientExtensionResults() : {}
    };
    if (cred.authenticatorAttachment) out.authenticatorAttachment = cred.authenticatorAttachment;
    return out;
  }

  // ---------------------------------------------------------------- UI helpers

  function $(id) {
    return document.getElementById(id);
  }

  // The page's one aria-live region. kind: 'info' | 'busy' | 'error' | 'success'.
  function setStatus(kind, text, requestId) {
    var box = $('status');
    if (!box) return;
    box.textContent = '';
    box.className = 'status' + (kind ? ' status--' + kind : '');
    if (!text) return;
    var p = document.createElement('p');
    p.className = 'status__text';
    p.textContent = text;
    box.appendChild(p);
    if (requestId) {
      var small = document.createElement('p');
      small.className = 'status__id';
      small.appendChild(document.createTextNode('Request ID: '));
      var code = document.createElement('code');
      code.textContent = requestId;
      small.appendChild(code);
      box.appendChild(small);
    }
  }

  function showError(err, ceremony) {
    var e = explain(err, ceremony);
    setStatus('error', e.text, e.requestId);
  }

  // Marks a button busy without disabling it: a disabled button drops keyboard
  // focus, which strands keyboard and screen-reader users.
  function setBusy(button, busy, label) {
    if (!button) return;
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.setAttribute('aria-disabled', busy ? 'true' : 'false');
    button.classList.toggle('is-busy', busy);
    button.textContent = busy ? label : button.dataset.label;
  }

  function isBusy(button) {
    return button && button.getAttribute('aria-disabled') === 'true';
  }

  function queryParam(name) {
    try {
      return new URLSearchParams(window.location.search).get(name);
    } catch (e) {
      return null;
    }
  }

  // Server times are unix seconds (or milliseconds, or RFC 3339); null → null.
  function toDate(value) {
    if (value === null || value === undefined || value === '') return null;
    var d;
    if (typeof value === 'number') d = new Date(value < 1e12 ? value * 1000 : value);
    else d = new Date(value);
    return isNaN(d.getTime()) ? null : d;
  }

  function formatDate(value, fallback) {
    var d = toDate(value);
    if (!d) return fallback;
    try {
      return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(d);
    } catch (e) {
      return d.toLocaleString();
    }
  }

  function el(tag, className, text) {
    var n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
  }

  function fillList(dl, rows) {
    dl.textContent = '';
    rows.forEach(function (row) {
      dl.appendChild(el('dt', null, row[0]));
      dl.appendChild(el('dd', null, row[1]));
    });
  }

  function rolesText(roles) {
    return roles && roles.length ? roles.join(', ') : 'none';
  }

  // ---------------------------------------------------------------- login page

  // Why the gate sent the person back here (reason codes from the policy).
  var STEP_UP_REASONS = {
    'auth-too-old': 'This page needs a recent key tap. Sign in again to continue.',
    'credential-not-hardware': 'This page accepts only approved hardware security keys. Sign in with one.',
    'credential-synced': 'This page does not accept synced passkeys. Sign in with a device-bound security key.',
    'user-verification-missing': 'This page needs a key that checks your PIN or fingerprint.'
  };

  function initLogin() {
    var form = $('login-form');
    var button = $('signin-button');
    var emailField = $('username');
    var rd = queryParam('rd');
    var problem = webauthnProblem();
    if (problem) {
      setStatus('error', problem);
      return;
    }
    // Sent here by a route that needs a fresher or stronger tap (step-up).
    var stepUp = STEP_UP_REASONS[queryParam('reason')];
    if (stepUp) setStatus('', stepUp);

    // Conditional UI (passkeys offered in the username field's autofill).
    // It runs until the person picks a passkey there or presses the button;
    // the button aborts it first, because a browser runs one request at a time.
    var conditional = null; // {controller, done: Promise}

    function optionsBody() {
      var body = {};
      if (rd) body.rd = rd;
      var email = emailField && !emailField.closest('[hidden]') ? emailField.value.trim() : '';
      if (email) body.email = email;
      return body;
    }

    function finish(cred, opts) {
      setStatus('busy', 'Checking your key…');
      return api(API + '/login/verify', { credential: credentialToJSON(cred), ceremony: opts.ceremony })
        .then(function (res) {
          setStatus('success', 'Signed in. Taking you back…');
          go(res.redirect || rd || '/');
        }, function (err) {
          // A passkey this site no longer knows: tell the password manager,
          // so it stops offering it (WebAuthn Signal API, where supported).
          if (err instanceof ApiError && err.code === 'credential-unknown' &&
              typeof window.PublicKeyCredential.signalUnknownCredential === 'function') {
            window.PublicKeyCredential.signalUnknownCredential({
              rpId: (opts.publicKey && opts.publicKey.rpId) || window.location.hostname,
              credentialId: cred.id
            }).catch(function () { /* best effort */ });
          }
          throw err;
        });
    }

    function startConditional() {
      var controller = new AbortController();
      var state = { controller: controller, aborted: false, picked: false };
      state.done = api(API + '/login/options', rd ? { rd: rd } : {})
        .then(function (opts) {
          if (state.aborted) return null;
          return navigator.credentials.get({
            publicKey: parseRequestOptions(opts.publicKey),
            mediation: 'conditional',
            signal: controller.signal
          }).then(function (cred) {
            if (state.aborted || !cred) return null;
            state.picked = true;
            setBusy(button, true, 'Signing in…');
            return finish(cred, opts);
          });
        })
        .catch(function (err) {
          // Until a passkey is picked nobody asked for anything, so a failure
          // (no passkeys here, options not loaded, a browser that rejects
          // autofill) stays quiet: the button still works and explains itself.
          if (state.aborted || !state.picked) return;
          setBusy(button, false);
          showError(err, 'login');
        });
      conditional = state;
    }

    function stopConditional() {
      if (!conditional) return Promise.resolve();
      var state = conditional;
      conditional = null;
      state.aborted = true;
      state.controller.abort();
      // Wait until the browser has really let go of the aborted request,
      // but never hang on a browser that does not settle it.
      return Promise.race([
        state.done.catch(function () {}),
        new Promise(function (resolve) { setTimeout(resolve, 1000); })
      ]);
    }

    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (isBusy(button)) return;
      setBusy(button, true, 'Waiting for your key…');
      setStatus('busy', 'Follow your browser\'s prompt: touch your security key, or use your fingerprint, face or PIN.');
      var options;
      stopConditional()
        .then(function () { return api(API + '/login/options', optionsBody()); })
        .then(function (opts) {
          options = opts;
          return navigator.credentials.get({ publicKey: parseRequestOptions(opts.publicKey) });
        })
        .then(function (cred) {
          if (!cred) throw Object.assign(new Error('No credential was returned.'), { name: 'NotAllowedError' });
          return finish(cred, options);
        })
        .catch(function (err) {
          setBusy(button, false);
          showError(err, 'login');
          // Offer the autofill again; it was aborted for the button.
          if (autofill) startConditional();
        });
    });

    var autofill = false;
    var PKC = window.PublicKeyCredential;
    if (typeof PKC.isConditionalMediationAvailable === 'function') {
      PKC.isConditionalMediationAvailable().then(function (yes) {
        if (!yes) return;
        autofill = true;
        $('autofill-field').hidden = false;
        startConditional();
      }, function () { /* no autofill; the button is enough */ });
    }
  }

  // ---------------------------------------------------------------- register page

  function initRegister() {
    var form = $('register-form');
    var button = $('create-button');
    var nickname = $('nickname');
    var invite = queryParam('invite');
    var problem = webauthnProblem();

    // Options fetched on load are used for the first press, so the browser
    // prompt follows the click directly (Safari wants that); a retry, or a
    // press long after loading, fetches a fresh challenge.
    var cached = null; // {opts, at}

    function fetchOptions() {
      return api(API + '/register/options', invite ? { invite: invite } : {});
    }

    function showInvite(info) {
      var box = $('invite-info');
      if (!info || !box) return;
      var rows = [];
      if (info.email) rows.push(['Email', info.email]);
      if (info.display_name) rows.push(['Name', info.display_name]);
      rows.push(['Roles', rolesText(info.roles)]);
      fillList($('invite-details'), rows);
      box.hidden = false;
    }

    if (problem) {
      setStatus('error', problem);
      return;
    }
    if (!invite) {
      // Adding a key to a signed-in account reuses this page without an invite;
      // the server says whether that is allowed.
      $('invite-loading').hidden = true;
    }

    fetchOptions().then(function (opts) {
      cached = { opts: opts, at: Date.now() };
      $('invite-loading').hidden = true;
      showInvite(opts.invite);
      form.hidden = false;
    }, function (err) {
      $('invite-loading').hidden = true;
      if (!invite && err instanceof ApiError && err.status === 401) {
        setStatus('error', 'This page needs the invite link you were sent. Open that link, or ask an administrator for a new one.');
        return;
      }
      showError(err, 'register');
      // A refused invite (4xx) will not get better by retrying; a network
      // blip or a server error might, so then the form is offered anyway
      // (a fresh fetch happens on submit).
      if (!(err instanceof ApiError && err.status < 500)) form.hidden = false;
    });

    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (isBusy(button)) return;
      var name = nickname.value.trim();
      if (!name) {
        nickname.setAttribute('aria-invalid', 'true');
        setStatus('error', 'Give this passkey a name, so you can tell your keys apart later.');
        nickname.focus();
        return;
      }
      nickname.removeAttribute('aria-invalid');
      setBusy(button, true, 'Waiting for your key…');
      setStatus('busy', 'Follow your browser\'s prompt: touch your security key, or use your fingerprint, face or PIN to create the passkey.');

      // Half the ceremony's timeout leaves time to finish before it expires.
      var fresh = cached && Date.now() - cached.at < ((cached.opts.publicKey && cached.opts.publicKey.timeout) || 120000) / 2;
      var ready = fresh ? Promise.resolve(cached.opts) : fetchOptions();
      cached = null; // a challenge is good for one attempt only
      var ceremony;
      ready
        .then(function (opts) {
          ceremony = opts.ceremony;
          showInvite(opts.invite);
          return navigator.credentials.create({ publicKey: parseCreationOptions(opts.publicKey) });
        })
        .then(function (cred) {
          if (!cred) throw Object.assign(new Error('No credential was returned.'), { name: 'NotAllowedError' });
          setStatus('busy', 'Saving your passkey…');
          return api(API + '/register/verify', {
            credential: credentialToJSON(cred),
            nickname: name,
            ceremony: ceremony
          });
        })
        .then(function (res) {
          setStatus('success', 'Passkey created. Taking you in…');
          go(res.redirect || '/');
        })
        .catch(function (err) {
          setBusy(button, false);
          showError(err, 'register');
        });
    });
  }

  // ---------------------------------------------------------------- account page

  function credentialItem(c) {
    var li = el('li', 'cred');
    li.dataset.credentialId = c.id || '';
    var head = el('div', 'cred__head');
    head.appendChild(el('span', 'cred__name', c.nickname || 'Unnamed key'));
    head.appendChild(el('span', 'badge ' + (c.synced ? 'badge--synced' : 'badge--device'),
      c.synced ? 'Synced passkey' : 'Device-bound key'));
    li.appendChild(head);
    var meta = el('p', 'cred__meta');
    meta.textContent = 'Added ' + formatDate(c.created, 'unknown') +
      ' · Last used ' + formatDate(c.last_used, 'never');
    li.appendChild(meta);
    var hint = el('p', 'cred__hint', c.synced
      ? 'Stored in a password manager or platform account and available on your other devices.'
      : 'Lives on one device or security key only.');
    li.appendChild(hint);
    // Room for per-key actions (rename, revoke) added later.
    li.appendChild(el('div', 'cred__actions'));
    return li;
  }

  function initAccount() {
    var signout = $('signout-form');
    var button = $('signout-button');

    api(API + '/me').then(function (me) {
      var rows = [['Email', me.email || '—']];
      if (me.display_name && me.display_name !== me.email) rows.push(['Name', me.display_name]);
      rows.push(['Roles', rolesText(me.roles)]);
      rows.push(['Signed in', formatDate(me.auth_time, 'unknown')]);
      fillList($('identity'), rows);

      var list = $('credential-list');
      list.textContent = '';
      var creds = me.credentials || [];
      creds.forEach(function (c) { list.appendChild(credentialItem(c)); });
      $('credential-count').textContent = creds.length === 1 ? '1 key' : creds.length + ' keys';
      $('no-credentials').hidden = creds.length !== 0;
      if (creds.length === 1) $('backup-hint').hidden = false;
      $('account-loading').hidden = true;
      $('account-body').hidden = false;
    }, function (err) {
      if (err instanceof ApiError && err.status === 401) {
        go(LOGIN_PATH + '?rd=' + encodeURIComponent(window.location.pathname));
        return;
      }
      $('account-loading').hidden = true;
      showError(err, 'account');
    });

    signout.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (isBusy(button)) return;
      setBusy(button, true, 'Signing out…');
      api('/.tapgate/logout', {}).then(function (res) {
        setStatus('success', 'Signed out.');
        go(res.redirect || LOGIN_PATH);
      }, function (err) {
        setBusy(button, false);
        showError(err, 'account');
      });
    });
  }

  // ---------------------------------------------------------------- start

  var pages = { login: initLogin, register: initRegister, account: initAccount };

  function start() {
    var page = document.body && document.body.dataset.page;
    document.documentElement.classList.add('js');
    if (pages[page]) pages[page]();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();

  // Exposed for the browser test and for debugging; not an API.
  window.tapgate = { explain: explain, b64urlToBytes: b64urlToBytes, bytesToB64url: bytesToB64url };
})();
