package queue

// Track counts work that the Primitive's owner started on its own (a
// timer's callback, say) among what Close waits for: it returns a done
// function to call when the work ends, and ok false, tracking nothing,
// once Close has begun.
func (p *Primitive) Track() (done func(), ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false
	}
	p.wg.Add(1)
	return p.wg.Done, true
}
