// Pure parts of src/git: backoff, secret scrubbing, the server's auth and CGI header parsing.
import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_BACKOFF } from '../src/git/backoff.js';
import { checkAuth, parseCgiHeaders } from '../src/git/http-server.js';
import { scrub, splitUserinfo } from '../src/git/remote.js';
import { pathSegments } from '../src/git/tree.js';

describe('backoffDelay', () => {
  const policy = { initialMs: 1000, maxMs: 30_000, factor: 2, jitter: 0.5 };

  it('grows exponentially up to the cap without jitter', () => {
    const noJitter = () => 0;
    expect([0, 1, 2, 3, 4, 5, 6, 50].map((a) => backoffDelay(a, policy, noJitter))).toEqual([
      1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
    ]);
  });

  it('shortens by at most the jitter fraction and never exceeds the cap', () => {
    expect(backoffDelay(2, policy, () => 0.999)).toBe(Math.round(4000 * (1 - 0.5 * 0.999)));
    expect(backoffDelay(10, policy, () => 0.5)).toBe(22500);
    for (let a = 0; a < 20; a++) {
      const d = backoffDelay(a, DEFAULT_BACKOFF);
      expect(d).toBeLessThanOrEqual(DEFAULT_BACKOFF.maxMs);
      expect(d).toBeGreaterThanOrEqual(Math.floor(DEFAULT_BACKOFF.initialMs * (1 - DEFAULT_BACKOFF.jitter)));
    }
  });

  it('treats negative or fractional attempts as whole, non-negative numbers', () => {
    expect(backoffDelay(-3, policy, () => 0)).toBe(1000);
    expect(backoffDelay(1.7, policy, () => 0)).toBe(2000);
  });
});

describe('secret handling', () => {
  it('splits userinfo out of a URL', () => {
    expect(splitUserinfo('https://bot:t%40k@git.example.org/state.git')).toEqual({
      url: 'https://git.example.org/state.git',
      username: 'bot',
      password: 't@k',
    });
    expect(splitUserinfo('https://git.example.org/state.git')).toEqual({ url: 'https://git.example.org/state.git' });
  });

  it('scrubs userinfo and secrets from text', () => {
    const text = 'clone of https://bot:hunter2@git.example.org/x failed; token hunter2 rejected';
    expect(scrub(text, ['hunter2'])).toBe('clone of https://***@git.example.org/x failed; token *** rejected');
    expect(scrub('see http://git.example.org/a@b', [])).toBe('see http://git.example.org/a@b');
  });
});

describe('git http server pieces', () => {
  const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

  it('checks bearer and basic tokens', () => {
    expect(checkAuth(undefined, undefined)).toBe('');
    expect(checkAuth(undefined, 'tok')).toBeUndefined();
    expect(checkAuth('Bearer tok', 'tok')).toBe('token');
    expect(checkAuth('Bearer nope', 'tok')).toBeUndefined();
    expect(checkAuth(basic('agent', 'tok'), 'tok')).toBe('agent');
    expect(checkAuth(basic('agent', 'tok2'), 'tok')).toBeUndefined();
    expect(checkAuth('Digest x', 'tok')).toBeUndefined();
  });

  it('parses CGI headers with and without Status', () => {
    expect(parseCgiHeaders('Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: 0')).toEqual({
      status: { code: 404, text: 'Not Found' },
      headers: { 'Content-Type': 'text/plain', Expires: '0' },
    });
    expect(parseCgiHeaders('Content-Type: application/x-git-upload-pack-result\nSet-Cookie: a\nSet-Cookie: b')).toEqual({
      status: { code: 200 },
      headers: { 'Content-Type': 'application/x-git-upload-pack-result', 'Set-Cookie': ['a', 'b'] },
    });
  });
});

describe('tree paths', () => {
  it('accepts plain relative paths and refuses escapes', () => {
    expect(pathSegments('guests/web/status.json')).toEqual(['guests', 'web', 'status.json']);
    for (const bad of ['/abs', 'a//b', '../x', 'a/./b', '.git/config', 'a/']) {
      expect(() => pathSegments(bad)).toThrow(/invalid repository path/);
    }
  });
});
