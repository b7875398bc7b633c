import { VoidVMError } from '../errors.js';
import type { HttpClient, RequestOptions } from '../http.js';
import type { ApiToken, CreateApiTokenRequest, CreatedApiToken, LoginResponse, User } from '../types.js';

/** What the auth resource may read/change on the owning client. */
export interface SessionStore {
  getRefreshToken(): string | undefined;
  setSession(token: string | undefined, refreshToken?: string): void;
}

/** `/auth/*`. */
export class AuthAPI {
  constructor(
    private readonly http: HttpClient,
    private readonly session: SessionStore,
  ) {}

  /** `POST /auth/login`; the client then uses the returned token. */
  async login(username: string, password: string, opts?: RequestOptions): Promise<LoginResponse> {
    const res = await this.loginRequest('/auth/login', { username, password }, opts);
    return res;
  }

  /**
   * `POST /auth/refresh` with the given refresh token (default: the one from the last
   * login/refresh); the client then uses the new token.
   */
  async refresh(refreshToken?: string, opts?: RequestOptions): Promise<LoginResponse> {
    const token = refreshToken ?? this.session.getRefreshToken();
    if (!token) {
      throw new VoidVMError({ code: 'NO_REFRESH_TOKEN', message: 'No refresh token: log in first or pass one' });
    }
    return this.loginRequest('/auth/refresh', { refresh_token: token }, opts);
  }

  /** `POST /auth/logout`: revokes the current token (and its refresh token). */
  async logout(opts?: RequestOptions): Promise<void> {
    await this.http.request<unknown>({ method: 'POST', path: '/auth/logout', ...opts });
    this.session.setSession(undefined);
  }

  me(opts?: RequestOptions): Promise<User> {
    return this.http.request<User>({ method: 'GET', path: '/auth/me', ...opts });
  }

  /**
   * `PUT /auth/password`. Every earlier token of the user stops working; if the server answers
   * with a fresh token the client switches to it.
   */
  async changePassword(currentPassword: string, newPassword: string, opts?: RequestOptions): Promise<void> {
    const data = await this.http.request<unknown>({
      method: 'PUT',
      path: '/auth/password',
      body: { current_password: currentPassword, new_password: newPassword },
      ...opts,
    });
    if (typeof data === 'object' && data !== null && typeof (data as { token?: unknown }).token === 'string') {
      const d = data as { token: string; refresh_token?: string };
      this.session.setSession(d.token, d.refresh_token);
    }
  }

  async listTokens(opts?: RequestOptions): Promise<ApiToken[]> {
    const data = await this.http.request<{ tokens: ApiToken[] }>({ method: 'GET', path: '/auth/tokens', ...opts });
    return data.tokens;
  }

  /** Creates a long-lived API token; `token` (the secret) is only shown in this answer. */
  createToken(body: CreateApiTokenRequest, opts?: RequestOptions): Promise<CreatedApiToken> {
    return this.http.request<CreatedApiToken>({ method: 'POST', path: '/auth/tokens', body, ...opts });
  }

  async revokeToken(id: string, opts?: RequestOptions): Promise<void> {
    await this.http.request<unknown>({
      method: 'DELETE',
      path: `/auth/tokens/${encodeURIComponent(id)}`,
      ...opts,
    });
  }

  private async loginRequest(path: string, body: unknown, opts?: RequestOptions): Promise<LoginResponse> {
    const raw = await this.http.requestRaw({ method: 'POST', path, body, auth: false, ...opts });
    const env = (raw ?? {}) as { data?: Partial<LoginResponse>; token?: string };
    const data = (env.data ?? env) as LoginResponse;
    const token = data.token ?? env.token;
    if (typeof token !== 'string' || token === '') {
      throw new VoidVMError({ code: 'INVALID_RESPONSE', message: `${path} answered without a token` });
    }
    this.session.setSession(token, data.refresh_token);
    return { ...data, token };
  }
}
