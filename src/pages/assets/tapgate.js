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
      if (info.recovery) {
        // A recovery invite or a device link: a key for an existing account.
        $('invite-heading').textContent = 'This link adds a key to the account of';
        rows.push(['Your other keys', info.revoke_other_keys
          ? 'will be revoked when this key is added'
          : 'keep working']);
      }
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

  // Shared by the account and admin pages: one key as a list item.
  // `actions(li)` may add buttons to the item's action row.
  function keyItem(k, actions) {
    var li = el('li', 'cred' + (k.revoked ? ' cred--revoked' : ''));
    li.dataset.credentialId = k.id || '';
    li.dataset.digest = k.digest || '';
    var head = el('div', 'cred__head');
    head.appendChild(el('span', 'cred__name', k.nickname || 'Unnamed key'));
    head.appendChild(el('span', 'badge ' + (k.synced ? 'badge--synced' : 'badge--device'),
      k.synced ? 'Synced passkey' : 'Device-bound key'));
    if (k.current) head.appendChild(el('span', 'badge badge--role', 'This session'));
    if (k.revoked) head.appendChild(el('span', 'badge badge--revoked', 'Revoked ' + formatDate(k.revoked, '')));
    li.appendChild(head);
    // The model's name when the AAGUID is a known one, else the AAGUID.
    var model = k.authenticator || (k.aaguid && !/^[0-]+$/.test(k.aaguid) ? 'AAGUID ' + k.aaguid : 'Unknown authenticator model');
    li.appendChild(el('p', 'cred__meta', model));
    li.appendChild(el('p', 'cred__meta',
      'Added ' + formatDate(k.created, 'unknown') + ' · Last used ' + formatDate(k.last_used, 'never') +
      (k.digest ? ' · ID ' + k.digest : '')));
    li.appendChild(el('p', 'cred__hint', k.synced
      ? 'Stored in a password manager or platform account and available on your other devices.'
      : 'Lives on one device or security key only.'));
    var row = el('div', 'cred__actions');
    li.appendChild(row);
    if (actions) actions(row, li);
    return li;
  }

  function smallButton(label, kind) {
    var b = el('button', 'button button--small ' + (kind || 'button--secondary'), label);
    b.type = 'button';
    return b;
  }

  // An inline "are you sure" panel in `row` (no window.confirm: it blocks,
  // and cannot carry a warning or a checkbox). `opts`: {message, confirm,
  // checkbox, optional (the box is a choice, not a confirmation)};
  // `onConfirm(panel)` returns a promise.
  function confirmInline(row, opts, onConfirm) {
    var old = row.querySelector('.confirm');
    if (old) old.remove();
    var panel = el('div', 'confirm');
    panel.setAttribute('role', 'group');
    panel.appendChild(el('p', null, opts.message));
    var box = null;
    if (opts.checkbox) {
      var label = el('label', 'check');
      box = document.createElement('input');
      box.type = 'checkbox';
      label.appendChild(box);
      label.appendChild(document.createTextNode(' ' + opts.checkbox));
      panel.appendChild(label);
    }
    var buttons = el('div', 'actions');
    var yes = smallButton(opts.confirm, 'button--danger');
    var no = smallButton('Cancel', 'button--ghost');
    buttons.appendChild(yes);
    buttons.appendChild(no);
    panel.appendChild(buttons);
    row.appendChild(panel);
    no.addEventListener('click', function () { panel.remove(); });
    yes.addEventListener('click', function () {
      if (isBusy(yes)) return;
      if (box && !box.checked && !opts.optional) {
        box.focus();
        setStatus('error', 'Tick the box to confirm that you understand.');
        return;
      }
      setBusy(yes, true, 'Working…');
      Promise.resolve(onConfirm(panel)).then(function () {
        panel.remove();
      }, function (err) {
        setBusy(yes, false);
        showError(err, 'account');
      });
    });
    (box || yes).focus();
  }

  // A small inline text form (rename, grant a role).
  function inlineForm(row, opts, onSave) {
    var old = row.querySelector('.inline-form');
    if (old) { old.remove(); return; }
    var form = el('form', 'inline-form');
    var input = document.createElement('input');
    input.type = 'text';
    input.maxLength = 64;
    input.value = opts.value || '';
    input.setAttribute('aria-label', opts.label);
    var save = el('button', 'button button--small button--primary', opts.save);
    save.type = 'submit';
    var cancel = smallButton('Cancel', 'button--ghost');
    form.appendChild(input);
    form.appendChild(save);
    form.appendChild(cancel);
    row.appendChild(form);
    input.focus();
    input.select();
    cancel.addEventListener('click', function () { form.remove(); });
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (isBusy(save)) return;
      var v = input.value.trim();
      if (!v) { input.setAttribute('aria-invalid', 'true'); input.focus(); return; }
      setBusy(save, true, 'Saving…');
      Promise.resolve(onSave(v)).then(function () { form.remove(); }, function (err) {
        setBusy(save, false);
        showError(err, 'account');
      });
    });
  }

  // Shows an invite or device link: QR code image (an SVG data: URL made by
  // the server), the link, and when it stops working.
  function showLink(prefix, res) {
    $(prefix + '-qr').src = res.qr || '';
    $(prefix + '-qr').hidden = !res.qr;
    $(prefix + '-url').textContent = res.url;
    $(prefix + '-expires').textContent = 'Single use, valid until ' + formatDate(res.expires, 'soon') + '.';
    var box = $(prefix === 'invite' ? 'invite-result' : 'device-link');
    box.hidden = false;
  }

  // Sends the person to sign in again (a fresh tap), then back to `back`.
  function stepUp(back) {
    go(LOGIN_PATH + '?rd=' + encodeURIComponent(back) + '&reason=auth-too-old');
  }

  function initAccount() {
    var signout = $('signout-form');
    var button = $('signout-button');
    var addForm = $('add-key-form');
    var addButton = $('add-key-button');
    var account = null;

    function load() {
      return api(API + '/account').then(render, function (err) {
        if (err instanceof ApiError && err.status === 401) {
          go(LOGIN_PATH + '?rd=' + encodeURIComponent(window.location.pathname + window.location.search));
          return;
        }
        $('account-loading').hidden = true;
        showError(err, 'account');
      });
    }

    function render(me) {
      account = me;
      var rows = [['Email', me.email || '—']];
      if (me.display_name && me.display_name !== me.email) rows.push(['Name', me.display_name]);
      rows.push(['Roles', rolesText(me.roles)]);
      rows.push(['Last key tap', formatDate(me.auth_time, 'unknown')]);
      fillList($('identity'), rows);
      $('admin-link').hidden = (me.roles || []).indexOf('admin') === -1;

      var keys = me.keys || [];
      var active = keys.filter(function (k) { return !k.revoked; });
      var revoked = keys.filter(function (k) { return k.revoked; });
      var list = $('credential-list');
      list.textContent = '';
      active.forEach(function (k) { list.appendChild(keyItem(k, function (row) { keyActions(row, k, active.length); })); });
      var rlist = $('revoked-list');
      rlist.textContent = '';
      revoked.forEach(function (k) { rlist.appendChild(keyItem(k)); });
      $('revoked-keys').hidden = revoked.length === 0;
      $('credential-count').textContent = active.length === 1 ? '1 key' : active.length + ' keys';
      $('no-credentials').hidden = active.length !== 0;
      $('backup-banner').hidden = active.length !== 1;
      $('fresh-hint').hidden = !!me.fresh;
      $('account-loading').hidden = true;
      $('account-body').hidden = false;
    }

    function keyActions(row, k, activeCount) {
      var rename = smallButton('Rename');
      rename.setAttribute('aria-label', 'Rename ' + (k.nickname || 'key'));
      rename.addEventListener('click', function () {
        inlineForm(row, { value: k.nickname, label: 'New name for ' + (k.nickname || 'the key'), save: 'Save' }, function (v) {
          return api(API + '/account/keys/' + encodeURIComponent(k.id) + '/rename', { nickname: v }).then(function () {
            setStatus('success', 'Renamed to “' + v + '”.');
            return load();
          });
        });
      });
      var revoke = smallButton('Revoke');
      revoke.setAttribute('aria-label', 'Revoke ' + (k.nickname || 'key'));
      revoke.addEventListener('click', function () {
        if (!account.fresh) { stepUp('/.tapgate/account'); return; }
        var last = activeCount === 1;
        confirmInline(row, last ? {
          message: 'This is your only key. After revoking it you cannot sign in any more, and only an administrator can give your account a new key.',
          checkbox: 'I understand that only an administrator can recover my account',
          confirm: 'Revoke my last key'
        } : {
          message: 'Revoke “' + (k.nickname || 'this key') + '”? It will no longer sign in, and sessions made with it end within seconds.' +
            (k.current ? ' That includes this session: you will be signed out.' : ''),
          confirm: 'Revoke'
        }, function () {
          return api(API + '/account/keys/' + encodeURIComponent(k.id) + '/revoke', { confirm_last_key: last }).then(function (res) {
            if (res.signed_out) {
              setStatus('success', 'Key revoked. You are signed out.');
              go(res.redirect || LOGIN_PATH);
              return null;
            }
            setStatus('success', 'Key revoked.');
            return load();
          }, function (err) {
            if (err instanceof ApiError && err.code === 'auth-too-old') stepUp('/.tapgate/account');
            throw err;
          });
        });
      });
      row.appendChild(rename);
      row.appendChild(revoke);
    }

    addForm.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (isBusy(addButton)) return;
      var problem = webauthnProblem();
      if (problem) { setStatus('error', problem); return; }
      // The tap must be recent: otherwise sign in again first and come back.
      if (account && !account.fresh) { stepUp('/.tapgate/account?add=1#add-key'); return; }
      var name = $('new-nickname').value.trim() || 'Backup key';
      setBusy(addButton, true, 'Waiting for your key…');
      setStatus('busy', 'Follow your browser\'s prompt: choose where to save the new passkey, or touch the new security key.');
      var ceremony;
      api(API + '/register/options', {})
        .then(function (opts) {
          ceremony = opts.ceremony;
          return navigator.credentials.create({ publicKey: parseCreationOptions(opts.publicKey) });
        })
        .then(function (cred) {
          if (!cred) throw Object.assign(new Error('No credential was returned.'), { name: 'NotAllowedError' });
          setStatus('busy', 'Saving the new key…');
          return api(API + '/register/verify', { credential: credentialToJSON(cred), nickname: name, ceremony: ceremony });
        })
        .then(function () {
          setBusy(addButton, false);
          setStatus('success', 'Key “' + name + '” added. You can now sign in with it.');
          return load();
        })
        .catch(function (err) {
          setBusy(addButton, false);
          if (err instanceof ApiError && err.code === 'auth-too-old') { stepUp('/.tapgate/account?add=1#add-key'); return; }
          showError(err, 'register');
        });
    });

    $('device-link-button').addEventListener('click', function () {
      var b = $('device-link-button');
      if (isBusy(b)) return;
      if (account && !account.fresh) { stepUp('/.tapgate/account#add-key'); return; }
      setBusy(b, true, 'Creating…');
      api(API + '/account/device-link', {}).then(function (res) {
        setBusy(b, false);
        showLink('device-link', res);
        setStatus('success', 'Scan the code on your other device, or open the link there. It works once, for 15 minutes.');
      }, function (err) {
        setBusy(b, false);
        if (err instanceof ApiError && err.code === 'auth-too-old') { stepUp('/.tapgate/account#add-key'); return; }
        showError(err, 'account');
      });
    });

    $('signout-everywhere-button').addEventListener('click', function () {
      var b = $('signout-everywhere-button');
      confirmInline(signout, {
        message: 'Sign out on every device and browser, this one included? Your keys keep working to sign in again.',
        confirm: 'Sign out everywhere'
      }, function () {
        setBusy(b, true, 'Signing out…');
        return api(API + '/account/sessions/revoke', {}).then(function (res) {
          setStatus('success', 'Signed out everywhere.');
          go(res.redirect || LOGIN_PATH);
        });
      });
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

    load().then(function () {
      // Back from the step-up sign-in: the add form is ready.
      if (queryParam('add') === '1' && account) {
        setStatus('', 'Your key tap is recent now. Name the new key and press “Add a key”.');
        $('add-key').focus();
        $('new-nickname').focus();
      }
    });
  }

  // ---------------------------------------------------------------- admin page

  function initAdmin() {
    var me = null;

    function call(path, body) {
      return api(API + '/admin' + path, body).catch(function (err) {
        if (err instanceof ApiError && err.status === 401) {
          go(LOGIN_PATH + '?rd=' + encodeURIComponent('/.tapgate/admin'));
        }
        throw err;
      });
    }

    function load() {
      return Promise.all([call('/users'), call('/invites')]).then(function (r) {
        me = r[0].me;
        renderUsers(r[0].users || []);
        renderInvites(r[1].invites || []);
        $('admin-loading').hidden = true;
        $('admin-body').hidden = false;
      }, function (err) {
        $('admin-loading').hidden = true;
        showError(err, 'account');
      });
    }

    function done(message) {
      return function () {
        setStatus('success', message);
        return load();
      };
    }

    function renderUsers(users) {
      var list = $('user-list');
      list.textContent = '';
      $('user-count').textContent = users.length === 1 ? '1 user' : users.length + ' users';
      users.forEach(function (u) { list.appendChild(userItem(u)); });
    }

    function userItem(u) {
      var li = el('li', 'user');
      li.dataset.email = u.email;
      var head = el('div', 'user__head');
      head.appendChild(el('span', 'user__email', u.email));
      (u.roles || []).forEach(function (r) { head.appendChild(el('span', 'badge badge--role', r)); });
      if (u.disabled) head.appendChild(el('span', 'badge badge--disabled', 'Disabled'));
      li.appendChild(head);
      li.appendChild(el('p', 'user__meta', u.active_keys + (u.active_keys === 1 ? ' active key' : ' active keys') +
        ' · since ' + formatDate(u.created, 'unknown') + ' · ' + u.subject));
      var row = el('div', 'cred__actions');
      li.appendChild(row);
      var base = '/users/' + encodeURIComponent(u.subject);
      var self = u.subject === me;

      if (!self || u.disabled) {
        var toggle = smallButton(u.disabled ? 'Enable' : 'Disable');
        toggle.addEventListener('click', function () {
          if (u.disabled) {
            setBusy(toggle, true, 'Enabling…');
            call(base + '/enable', {}).then(done(u.email + ' can sign in again.'), function (err) { setBusy(toggle, false); showError(err); });
            return;
          }
          confirmInline(row, {
            message: 'Disable ' + u.email + '? Sign-in is refused and every session ends within seconds, on every instance.',
            confirm: 'Disable'
          }, function () { return call(base + '/disable', {}).then(done(u.email + ' is disabled.')); });
        });
        row.appendChild(toggle);
      }
      var end = smallButton('End sessions');
      end.addEventListener('click', function () {
        confirmInline(row, {
          message: 'End every session of ' + u.email + '? Their keys still work to sign in again.' + (self ? ' That includes yours.' : ''),
          confirm: 'End sessions'
        }, function () { return call(base + '/sessions/revoke', {}).then(done('Sessions of ' + u.email + ' ended.')); });
      });
      row.appendChild(end);
      var grant = smallButton('Grant a role');
      grant.addEventListener('click', function () {
        inlineForm(row, { label: 'Role to grant to ' + u.email, save: 'Grant' }, function (v) {
          return call(base + '/roles', { grant: v }).then(done('Granted ' + v + ' to ' + u.email + ' (from their next sign-in).'));
        });
      });
      row.appendChild(grant);
      (u.roles || []).forEach(function (r) {
        if (self && r === 'admin') return;
        var take = smallButton('Remove ' + r);
        take.addEventListener('click', function () {
          confirmInline(row, {
            message: 'Take the role ' + r + ' from ' + u.email + '? Their sessions end (they carry the roles).',
            confirm: 'Remove ' + r
          }, function () { return call(base + '/roles', { revoke: r }).then(done('Removed ' + r + ' from ' + u.email + '.')); });
        });
        row.appendChild(take);
      });
      var recover = smallButton('Recovery invite');
      recover.addEventListener('click', function () {
        confirmInline(row, {
          message: 'Create a single-use link that adds a new key to ' + u.email + '\'s account (for a lost or broken key).',
          checkbox: 'Also revoke their other keys when the new one is added',
          confirm: 'Create recovery invite',
          optional: true
        }, function (panel) {
          var box = panel.querySelector('input[type=checkbox]');
          return call('/invites', { recover: u.subject, revoke_other_keys: !!(box && box.checked) }).then(function (res) {
            showInvite(res, 'Recovery invite for ' + u.email + (res.revoke_other_keys ? ' (revokes their other keys)' : ''));
            return load();
          });
        });
      });
      row.appendChild(recover);

      var keys = el('ul', 'creds');
      var active = (u.keys || []).filter(function (k) { return !k.revoked; }).length;
      (u.keys || []).forEach(function (k) {
        keys.appendChild(keyItem(k, k.revoked ? null : function (krow) {
          var revoke = smallButton('Revoke key');
          revoke.setAttribute('aria-label', 'Revoke ' + (k.nickname || 'key') + ' of ' + u.email);
          revoke.addEventListener('click', function () {
            var last = active === 1;
            confirmInline(krow, last ? {
              message: 'This is the only key of ' + u.email + '. After revoking it they cannot sign in until you send them a recovery invite.',
              checkbox: 'Revoke their last key anyway',
              confirm: 'Revoke last key'
            } : {
              message: 'Revoke “' + (k.nickname || 'this key') + '” of ' + u.email + '? Sessions made with it end within seconds.',
              confirm: 'Revoke key'
            }, function () {
              return call('/keys/' + encodeURIComponent(k.id) + '/revoke', { confirm_last_key: last }).then(done('Key revoked.'));
            });
          });
          krow.appendChild(revoke);
        }));
      });
      li.appendChild(keys);
      return li;
    }

    function showInvite(res, forText) {
      $('invite-for').textContent = forText;
      showLink('invite', res);
      $('invite-result').scrollIntoView({ block: 'nearest' });
    }

    function renderInvites(all) {
      var showAll = $('invites-all').checked;
      var now = Date.now() / 1000;
      var list = $('invite-list');
      list.textContent = '';
      var shown = all.filter(function (i) { return showAll || i.state === 'pending'; });
      shown.forEach(function (i) {
        var li = el('li', 'cred');
        li.dataset.inviteId = i.id;
        var head = el('div', 'cred__head');
        head.appendChild(el('span', 'cred__name', i.email));
        head.appendChild(el('span', 'badge badge--role', i.recovery_for ? 'Recovery' : 'New user'));
        head.appendChild(el('span', 'badge ' + (i.state === 'pending' ? 'badge--synced' : 'badge--device'), i.state));
        li.appendChild(head);
        li.appendChild(el('p', 'cred__meta', 'ID ' + i.short_id + ' · roles ' + rolesText(i.roles) +
          ' · by ' + i.created_by + ' · ' + (i.expires > now ? 'expires ' : 'expired ') + formatDate(i.expires, '')));
        var row = el('div', 'cred__actions');
        if (i.state === 'pending') {
          var cancel = smallButton('Cancel invite');
          cancel.addEventListener('click', function () {
            setBusy(cancel, true, 'Cancelling…');
            call('/invites/' + encodeURIComponent(i.id) + '/cancel', {}).then(done('Invite for ' + i.email + ' cancelled.'), function (err) {
              setBusy(cancel, false);
              showError(err);
            });
          });
          row.appendChild(cancel);
        }
        li.appendChild(row);
        list.appendChild(li);
      });
      $('no-invites').hidden = shown.length !== 0;
      renderInvites.last = all;
    }

    $('invites-all').addEventListener('change', function () {
      if (renderInvites.last) renderInvites(renderInvites.last);
    });

    $('invite-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var b = $('invite-button');
      if (isBusy(b)) return;
      var email = $('invite-email').value.trim();
      if (!email) { $('invite-email').setAttribute('aria-invalid', 'true'); $('invite-email').focus(); return; }
      $('invite-email').removeAttribute('aria-invalid');
      var roles = $('invite-roles').value.split(',').map(function (r) { return r.trim(); }).filter(Boolean);
      setBusy(b, true, 'Creating…');
      call('/invites', { email: email, roles: roles, ttl: $('invite-ttl').value }).then(function (res) {
        setBusy(b, false);
        showInvite(res, 'Invite for ' + res.email + ' (' + rolesText(roles) + ')');
        setStatus('success', 'Invite created. Send the link, or let them scan the code.');
        return load();
      }, function (err) {
        setBusy(b, false);
        showError(err);
      });
    });

    load();
  }

  // ---------------------------------------------------------------- start

  var pages = { login: initLogin, register: initRegister, account: initAccount, admin: initAdmin };

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
