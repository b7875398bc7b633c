import type { HttpClient, RequestOptions } from '../http.js';
import type { CreateImageRequest, Image, UploadImageRequest, WithOperation } from '../types.js';

const enc = encodeURIComponent;

/** `/images`: disk images, ISOs and kernels VMs boot from. */
export class ImagesAPI {
  constructor(private readonly http: HttpClient) {}

  async list(opts?: RequestOptions): Promise<Image[]> {
    const data = await this.http.request<{ images: Image[] }>({ method: 'GET', path: '/images', ...opts });
    return data.images;
  }

  /** By id or by name. */
  get(idOrName: string, opts?: RequestOptions): Promise<Image> {
    return this.http.request<Image>({ method: 'GET', path: `/images/${enc(idOrName)}`, ...opts });
  }

  /**
   * Admin: import from a URL (or a server-side path); resolves once imported. A URL import with
   * `wait: false` resolves at once (202) with the image (`downloading`) and its `operation`.
   */
  create(body: CreateImageRequest, opts?: RequestOptions): Promise<WithOperation<Image>> {
    return this.http.requestAccepted<Image>({ method: 'POST', path: '/images', body, ...opts });
  }

  /** Admin: stream the image's bytes to `POST /images/upload?name=…&format=…`. */
  upload(body: UploadImageRequest, opts?: RequestOptions): Promise<Image> {
    const file = body.file instanceof Blob ? body.file : new Blob([body.file]);
    return this.http.request<Image>({
      method: 'POST',
      path: '/images/upload',
      query: { name: body.name, format: body.format },
      body: file,
      timeoutMs: 0,
      ...opts,
    });
  }

  /** Admin. 409 `IMAGE_IN_USE` while a VM uses it. */
  async delete(id: string, opts?: RequestOptions): Promise<void> {
    await this.http.request<unknown>({ method: 'DELETE', path: `/images/${enc(id)}`, ...opts });
  }
}
