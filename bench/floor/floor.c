#define _GNU_SOURCE
// The kernel floor for answering HTTP/1.1 requests on loopback: one thread,
// level-triggered epoll, one read per readable connection, one write of a
// canned answer per batch of complete requests; no parsing beyond the end of
// the head and Content-Length, no clock, no metrics, no allocation per
// request. Its CPU per request is about the least any user-space server
// pays on this machine for one request and one answer with these clients;
// bench/floor/run.sh compares nginx and Switchyard's cache hits with it.
//
//   floor PORT [BODY_BYTES]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#define MAXC 4096
static char *bufs[MAXC]; static int lens[MAXC];
static char resp[8192]; static int resplen;
int main(int argc, char **argv) {
  int port = atoi(argv[1]);
  int bodylen = argc > 2 ? atoi(argv[2]) : 1200;
  char body[8192]; memset(body, '1', bodylen); body[0]='{'; body[bodylen-1]='}';
  resplen = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Switchyard-Cache: hit\r\nContent-Length: %d\r\n\r\n%.*s", bodylen, bodylen, body);
  int ls = socket(AF_INET, SOCK_STREAM|SOCK_NONBLOCK, 0); int one=1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family=AF_INET, .sin_port=htons(port)}; a.sin_addr.s_addr=htonl(0x7f000001);
  if (bind(ls,(void*)&a,sizeof a)||listen(ls,1024)) { perror("bind"); return 1; }
  int ep = epoll_create1(0); struct epoll_event ev = {.events=EPOLLIN, .data.fd=ls}; epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[256]; char out[65536*2];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i=0;i<n;i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) { int c; while ((c = accept4(ls,0,0,SOCK_NONBLOCK)) >= 0) { setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one); bufs[c]=malloc(65536); lens[c]=0; struct epoll_event e={.events=EPOLLIN,.data.fd=c}; epoll_ctl(ep,EPOLL_CTL_ADD,c,&e);} continue; }
      int r = read(fd, bufs[fd]+lens[fd], 65536-lens[fd]);
      if (r <= 0) { if (r<0 && errno==EAGAIN) continue; close(fd); free(bufs[fd]); continue; }
      lens[fd] += r; int olen = 0; char *b = bufs[fd]; int L = lens[fd], off = 0;
      for (;;) {
        char *he = memmem(b+off, L-off, "\r\n\r\n", 4); if (!he) break;
        int hl = he + 4 - (b+off); int cl = 0; char *p = memmem(b+off, hl, "Content-Length:", 15); if (!p) p = memmem(b+off, hl, "content-length:", 15);
        if (p) cl = atoi(p+15);
        if (L-off < hl+cl) break;
        off += hl+cl; memcpy(out+olen, resp, resplen); olen += resplen;
      }
      if (off) { memmove(b, b+off, L-off); lens[fd] = L-off; }
      if (olen) { if (write(fd, out, olen) != olen) { close(fd); free(bufs[fd]); } }
    }
  }
}
