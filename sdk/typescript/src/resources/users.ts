import type { HttpClient, RequestOptions } from '../http.js';
import type { CreateUserRequest, UpdateUserRequest, User, UserListParams, UserPage } from '../types.js';

const enc = encodeURIComponent;

/** `/users` (admin). */
export class UsersAPI {
  constructor(private readonly http: HttpClient) {}

  /** Every user, fetching all pages. */
  async list(params: UserListParams = {}, opts?: RequestOptions): Promise<User[]> {
    const all: User[] = [];
    let page = params.page ?? 1;
    for (;;) {
      const res = await this.listPage({ ...params, page, limit: params.limit ?? 100 }, opts);
      all.push(...res.users);
      if (res.users.length === 0 || page >= res.pagination.pages) return all;
      page++;
    }
  }

  listPage(params: UserListParams = {}, opts?: RequestOptions): Promise<UserPage> {
    return this.http.request<UserPage>({ method: 'GET', path: '/users', query: { ...params }, ...opts });
  }

  get(id: string, opts?: RequestOptions): Promise<User> {
    return this.http.request<User>({ method: 'GET', path: `/users/${enc(id)}`, ...opts });
  }

  create(body: CreateUserRequest, opts?: RequestOptions): Promise<User> {
    return this.http.request<User>({ method: 'POST', path: '/users', body, ...opts });
  }

  update(id: string, body: UpdateUserRequest, opts?: RequestOptions): Promise<User> {
    return this.http.request<User>({ method: 'PUT', path: `/users/${enc(id)}`, body, ...opts });
  }

  async delete(id: string, opts?: RequestOptions): Promise<void> {
    await this.http.request<unknown>({ method: 'DELETE', path: `/users/${enc(id)}`, ...opts });
  }
}
