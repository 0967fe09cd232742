// A real OAuth 2 authorization server (oidc-provider) for tokenproxy's
// end-to-end test of `type: oauth2`: the client credentials grant (RFC 6749
// §4.4) with HTTP Basic client authentication (§2.3.1), on plain HTTP on
// 127.0.0.1 (tokenproxy allows http to a loopback host). Beside the token
// endpoint it serves /api/whoami, which answers 200 only to a bearer token
// the provider issued and still holds, so that a call through tokenproxy
// proves the token is the server's own. It prints one JSON line when it
// listens ({"issuer": ...}) and one per token issued ({"issued": n}).
import http from 'node:http';
import Provider from 'oidc-provider';

const { OIDC_CLIENT_ID: clientId, OIDC_CLIENT_SECRET: clientSecret } = process.env;
const ttl = Number(process.env.OIDC_TOKEN_TTL || 600);

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'api:read',
    }],
    scopes: ['api:read'],
    features: { clientCredentials: { enabled: true }, devInteractions: { enabled: false } },
    ttl: { ClientCredentials: ttl },
  });
  let issued = 0;
  provider.on('grant.success', () => console.log(JSON.stringify({ issued: ++issued })));
  provider.on('grant.error', (ctx, err) => console.log(JSON.stringify({ refused: err.error })));
  const callback = provider.callback();
  server.on('request', async (req, res) => {
    if (!req.url.startsWith('/api/')) {
      callback(req, res);
      return;
    }
    const m = /^Bearer (\S+)$/i.exec(req.headers.authorization || '');
    const token = m && await provider.ClientCredentials.find(m[1]);
    res.setHeader('content-type', 'application/json');
    if (!token) {
      res.statusCode = 401;
      res.end(JSON.stringify({ error: 'invalid_token' }));
      return;
    }
    res.end(JSON.stringify({ client_id: token.clientId, scope: token.scope }));
  });
  console.log(JSON.stringify({ issuer }));
});
